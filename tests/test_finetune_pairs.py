"""Vectorised pair sampling for contrastive training."""

import numpy as np
import pytest

from embetter_assets.finetune import sample_pairs


def check_pairs(labels, first, second, is_positive):
    labels = np.asarray(labels)
    assert first.dtype == np.int64
    assert second.dtype == np.int64
    assert is_positive.dtype == bool
    assert np.array_equal(labels[first] == labels[second], is_positive)
    assert not np.any(first == second)


@pytest.mark.parametrize(
    ("n_pos", "n_neg"),
    [(1, 3), (2, 0), (0, 4), (3, 1)],
)
def test_counts_per_anchor(n_pos, n_neg):
    labels = np.repeat(["a", "b", "c"], [5, 7, 9])
    first, second, is_positive = sample_pairs(labels, n_pos=n_pos, n_neg=n_neg, rng=0)
    check_pairs(labels, first, second, is_positive)
    assert int(is_positive.sum()) == n_pos * len(labels)
    assert int((~is_positive).sum()) == n_neg * len(labels)
    assert np.array_equal(np.bincount(first, minlength=len(labels)), np.full(len(labels), n_pos + n_neg))


def test_shuffled_integer_labels():
    labels = np.random.default_rng(1).integers(0, 4, size=200)
    first, second, is_positive = sample_pairs(labels, n_pos=2, n_neg=2, rng=3)
    check_pairs(labels, first, second, is_positive)
    assert first.size == 800


def test_partners_cover_whole_class():
    labels = np.array([0] * 4 + [1] * 6)
    first, second, is_positive = sample_pairs(labels, n_pos=200, n_neg=200, rng=0)
    positive_partners_of_0 = set(second[(first == 0) & is_positive].tolist())
    negative_partners_of_0 = set(second[(first == 0) & ~is_positive].tolist())
    assert positive_partners_of_0 == {1, 2, 3}
    assert negative_partners_of_0 == {4, 5, 6, 7, 8, 9}


def test_partners_are_uniform():
    labels = np.array([0] * 5 + [1] * 3)
    first, second, is_positive = sample_pairs(labels, n_pos=4000, n_neg=0, rng=0)
    counts = np.bincount(second[first == 2], minlength=5)[:5]
    # Anchor 2 draws its 4,000 partners from the other four members of class 0.
    assert counts[2] == 0
    assert np.all(np.abs(counts[[0, 1, 3, 4]] - 1000) < 120)


def test_singleton_class_negatives_only():
    labels = np.array(["rare", "common", "common", "common"])
    first, second, is_positive = sample_pairs(labels, n_pos=1, n_neg=2, rng=0)
    check_pairs(labels, first, second, is_positive)
    assert not np.any(is_positive[first == 0])
    assert int(np.sum(first == 0)) == 2


def test_single_class_positives_only():
    labels = np.array(["only"] * 4)
    first, second, is_positive = sample_pairs(labels, n_pos=2, n_neg=3, rng=0)
    check_pairs(labels, first, second, is_positive)
    assert is_positive.all()
    assert first.size == 8


@pytest.mark.parametrize("labels", [[], ["alone"]], ids=["empty", "one-example"])
def test_too_few_examples_give_no_pairs(labels):
    first, second, is_positive = sample_pairs(labels, rng=0)
    assert first.size == 0
    assert second.size == 0
    assert is_positive.size == 0


def test_same_rng_seed_same_pairs():
    labels = np.repeat(["x", "y"], 10)
    first = sample_pairs(labels, rng=7)
    second = sample_pairs(labels, rng=7)
    other = sample_pairs(labels, rng=8)
    for left, right in zip(first, second):
        assert np.array_equal(left, right)
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_pos": -1}, "n_pos must be a non-negative integer, got -1"),
        ({"n_neg": 1.5}, "n_neg must be a non-negative integer, got 1.5"),
        ({"n_neg": True}, "n_neg must be a non-negative integer, got True"),
    ],
)
def test_invalid_counts_raise(params, message):
    with pytest.raises(ValueError, match=message):
        sample_pairs(["a", "b"], **params)


def test_two_dimensional_labels_raise():
    with pytest.raises(ValueError, match=r"labels must be one-dimensional, got an array of shape \(2, 2\)"):
        sample_pairs([[0, 1], [1, 0]])
