"""Behaviour of the finetuners as scikit-learn transformers: parameters, labels, errors,
partial_fit, reproducibility and logging."""

import logging

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner, ForwardFinetuner
from embetter_assets.finetune._feedforward import cosine_similarity_loss

FINETUNERS = [FeedForwardFinetuner, ContrastiveFinetuner]


def make_blobs_data(n_per_class=30, n_features=24, labels=("business", "sport", "tech"), seed=0):
    """Return well separated Gaussian blobs with the given labels, shuffled."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(len(labels), n_features))
    X = np.concatenate([centre + rng.normal(size=(n_per_class, n_features)) for centre in centres])
    y = np.repeat(np.asarray(labels), n_per_class)
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]


@pytest.fixture
def data():
    return make_blobs_data()


def small(cls, **params):
    """Return a finetuner that trains in a fraction of a second."""
    return cls(**{"hidden_dim": 6, "n_epochs": 10, "random_state": 0, **params})


# ----------------------------------------------------------------------
# Parameters and the estimator contract
# ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", FINETUNERS)
def test_constructor_stores_parameters_only(cls):
    finetuner = cls()
    assert vars(finetuner) == finetuner.get_params(deep=False)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_shared_parameter_names(cls):
    params = cls().get_params()
    for name in ("hidden_dim", "n_epochs", "learning_rate", "random_state"):
        assert name in params


def test_forward_finetuner_is_alias():
    assert ForwardFinetuner is FeedForwardFinetuner


def test_article_call_fits_and_transforms(data):
    X, y = data
    tuner = ForwardFinetuner(n_epochs=500, learning_rate=0.01, hidden_dim=200)
    X_new = tuner.fit(X[:24], y[:24]).transform(X[24:])
    assert X_new.shape == (66, 200)
    assert X_new.dtype == np.float32


@pytest.mark.parametrize("cls", FINETUNERS)
def test_transform_before_fit_raises(cls, data):
    X, _ = data
    with pytest.raises(NotFittedError):
        cls().transform(X)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_fitted_attributes(cls, data):
    X, y = data
    finetuner = small(cls).fit(X, y)
    assert finetuner.n_features_in_ == X.shape[1]
    assert finetuner.n_features_out_ == 6
    assert finetuner.classes_.tolist() == ["business", "sport", "tech"]
    assert 1 <= finetuner.best_iteration_ <= finetuner.n_iter_ <= 10
    assert len(finetuner.loss_curve_) == finetuner.n_iter_
    assert len(finetuner.validation_loss_curve_) == finetuner.n_iter_
    names = finetuner.get_feature_names_out()
    assert names.tolist() == [f"{cls.__name__.lower()}{i}" for i in range(6)]


@pytest.mark.parametrize("cls", FINETUNERS)
def test_set_params_takes_effect(cls, data):
    X, y = data
    finetuner = small(cls)
    finetuner.set_params(hidden_dim=3, n_epochs=4, early_stopping=False).fit(X, y)
    assert finetuner.transform(X).shape == (len(y), 3)
    assert finetuner.n_iter_ == 4

    slow = small(cls, learning_rate=1e-6).fit(X, y).transform(X)
    fast = small(cls).set_params(learning_rate=1e-6).fit(X, y).transform(X)
    default = small(cls).fit(X, y).transform(X)
    assert np.array_equal(slow, fast)
    assert not np.array_equal(fast, default)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_clone_is_unfitted_copy(cls, data):
    X, y = data
    finetuner = small(cls, hidden_dim=5).fit(X, y)
    copy = clone(finetuner)
    assert copy.get_params() == finetuner.get_params()
    assert not hasattr(copy, "classes_")
    with pytest.raises(NotFittedError):
        copy.transform(X)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_pipeline_fit_then_transform(cls, data):
    X, y = data
    pipe = make_pipeline(small(cls), LogisticRegression())
    pipe.fit(X[:60], y[:60])
    assert pipe.score(X[60:], y[60:]) > 0.9
    assert pipe[:-1].transform(X[60:]).shape == (30, 6)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_grid_search_over_hidden_dim(cls, data):
    X, y = data
    pipe = make_pipeline(small(cls), LogisticRegression())
    search = GridSearchCV(pipe, {f"{cls.__name__.lower()}__hidden_dim": [2, 4]}, cv=2)
    search.fit(X, y)
    best = search.best_estimator_[0]
    assert best.n_features_out_ == best.hidden_dim
    assert best.hidden_dim in (2, 4)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_fit_twice_starts_over(cls, data):
    X, y = data
    finetuner = small(cls)
    first = finetuner.fit(X, y).transform(X)
    first_epochs = finetuner.n_iter_
    second = finetuner.fit(X, y).transform(X)
    assert finetuner.n_iter_ == first_epochs
    assert np.array_equal(first, second)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_dataframe_input_keeps_feature_names(cls, data):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X, columns=[f"dim{i}" for i in range(X.shape[1])])
    finetuner = small(cls).fit(frame, y)
    assert finetuner.feature_names_in_.tolist() == list(frame.columns)
    assert np.array_equal(finetuner.transform(frame), small(cls).fit(X, y).transform(X))


# ----------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", FINETUNERS)
@pytest.mark.parametrize(
    "labels",
    [("negative", "positive"), (3, 7, 11), (-1, 1), (True, False)],
    ids=["strings", "integers", "signed", "booleans"],
)
def test_classes_keep_original_labels(cls, labels):
    X, y = make_blobs_data(n_per_class=10, labels=labels)
    finetuner = small(cls).fit(X, y)
    assert finetuner.classes_.tolist() == sorted(labels)
    assert finetuner.classes_.dtype == np.asarray(labels).dtype


@pytest.mark.parametrize("cls", FINETUNERS)
def test_object_string_labels(cls):
    X, y = make_blobs_data(n_per_class=10)
    finetuner = small(cls).fit(X, y.astype(object))
    assert finetuner.classes_.tolist() == ["business", "sport", "tech"]


@pytest.mark.parametrize("cls", FINETUNERS)
def test_one_class_raises(cls, data):
    X, _ = data
    with pytest.raises(ValueError, match=r"at least 2 classes.*\['spam'\]"):
        small(cls).fit(X, np.repeat("spam", len(X)))


@pytest.mark.parametrize("cls", FINETUNERS)
def test_single_example_class_raises(cls, data):
    X, y = data
    y = y.copy()
    y[0] = "weather"
    with pytest.raises(ValueError, match="at least 2 examples of every class.*'weather'"):
        small(cls).fit(X, y)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_continuous_target_raises(cls, data):
    X, _ = data
    with pytest.raises(ValueError, match="Unknown label type"):
        small(cls).fit(X, np.linspace(0.0, 1.0, len(X)))


# ----------------------------------------------------------------------
# Invalid input
# ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", FINETUNERS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_input_raises(cls, data, bad_value):
    X, y = data
    X = X.copy()
    X[3, 2] = bad_value
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        small(cls).fit(X, y)
    fitted = small(cls).fit(*data)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.transform(X)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_wrong_feature_count_raises(cls, data):
    X, y = data
    finetuner = small(cls).fit(X, y)
    with pytest.raises(ValueError, match=f"X has 23 features, but {cls.__name__} is expecting 24 features"):
        finetuner.transform(X[:, :-1])


@pytest.mark.parametrize("cls", FINETUNERS)
def test_mismatched_lengths_raise(cls, data):
    X, y = data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        small(cls).fit(X, y[:-1])


@pytest.mark.parametrize("cls", FINETUNERS)
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("hidden_dim", 0, "hidden_dim of .* must be an integer >= 1, got 0"),
        ("hidden_dim", 2.5, "hidden_dim of .* must be an integer >= 1, got 2.5"),
        ("n_epochs", 0, "n_epochs of .* must be an integer >= 1, got 0"),
        ("learning_rate", 0.0, r"learning_rate of .* must be a finite number in \(0.0, inf\), got 0.0"),
        ("batch_size", 0, "batch_size of .* must be an integer >= 1, got 0"),
        ("weight_decay", -0.1, r"weight_decay of .* must be a finite number in \[0.0, inf\), got -0.1"),
        ("dropout", 1.0, r"dropout of .* must be a finite number in \[0.0, 1.0\), got 1.0"),
        ("early_stopping", "yes", "early_stopping of .* must be True or False, got 'yes'"),
        ("validation_fraction", 0.9, r"validation_fraction of .* must be a finite number in \(0.0, 0.5\], got 0.9"),
        ("n_iter_no_change", 0, "n_iter_no_change of .* must be an integer >= 1, got 0"),
        ("learning_rate", float("inf"), r"learning_rate of .* must be a finite number in \(0.0, inf\), got inf"),
    ],
)
def test_invalid_parameter_raises(cls, data, name, value, message):
    X, y = data
    with pytest.raises(ValueError, match=message):
        small(cls, **{name: value}).fit(X, y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_neg": -1}, "n_neg of ContrastiveFinetuner must be an integer >= 0, got -1"),
        ({"n_pos": 0, "n_neg": 0}, "n_pos and n_neg of ContrastiveFinetuner are both 0"),
    ],
)
def test_invalid_contrastive_parameter_raises(data, params, message):
    X, y = data
    with pytest.raises(ValueError, match=message):
        small(ContrastiveFinetuner, **params).fit(X, y)


def test_invalid_similarity_weight_raises(data):
    X, y = data
    message = r"similarity_weight of FeedForwardFinetuner must be a finite number in \[0.0, inf\), got -1.0"
    with pytest.raises(ValueError, match=message):
        small(FeedForwardFinetuner, similarity_weight=-1.0).fit(X, y)


# ----------------------------------------------------------------------
# Feed-forward loss
# ----------------------------------------------------------------------


def test_cosine_similarity_loss_targets():
    embedded = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    codes = torch.tensor([0, 0, 1])
    # Same-label rows point the same way and the other row is orthogonal: every target is met.
    assert cosine_similarity_loss(embedded, codes, embedded, codes).item() == 0.0
    swapped = torch.tensor([1, 1, 0])
    assert cosine_similarity_loss(embedded, codes, embedded, swapped).item() > 0.0


def test_cosine_similarity_loss_skips_self_pairs():
    embedded = torch.tensor([[1.0, 0.0]])
    assert cosine_similarity_loss(embedded, torch.tensor([0]), embedded, torch.tensor([0])) is None


def test_similarity_weight_zero_trains_classifier(data):
    X, y = data
    with_term = small(FeedForwardFinetuner, early_stopping=False).fit(X, y)
    without_term = small(FeedForwardFinetuner, early_stopping=False, similarity_weight=0.0).fit(X, y)
    assert with_term.loss_curve_[-1] != without_term.loss_curve_[-1]
    assert without_term.transform(X).shape == (len(y), 6)


# ----------------------------------------------------------------------
# partial_fit
# ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_trains_on_stream(cls, data):
    X, y = data
    finetuner = small(cls)
    classes = np.unique(y)
    weights_before = None
    for start in range(0, len(y), 30):
        finetuner.partial_fit(X[start : start + 30], y[start : start + 30], classes=classes)
        if weights_before is None:
            weights_before = [p.detach().clone() for p in finetuner.network_.parameters()]
    assert finetuner.n_iter_ == 3
    assert finetuner.classes_.tolist() == classes.tolist()
    weights_after = list(finetuner.network_.parameters())
    assert any(not torch.equal(before, after) for before, after in zip(weights_before, weights_after))
    assert finetuner.transform(X).shape == (len(y), 6)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_improves_separation(cls, data):
    X, y = data
    finetuner = small(cls, learning_rate=0.01)
    classes = np.unique(y)
    for _ in range(20):
        for start in range(0, len(y), 30):
            finetuner.partial_fit(X[start : start + 30], y[start : start + 30], classes=classes)
    X_new = finetuner.transform(X)
    assert LogisticRegression().fit(X_new, y).score(X_new, y) > 0.9


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_unknown_label_raises(cls, data):
    X, y = data
    finetuner = small(cls).partial_fit(X, y, classes=["business", "sport", "tech"])
    y_new = y.copy()
    y_new[5] = "weather"
    with pytest.raises(ValueError, match=r"labels \['weather'\] that are not in classes"):
        finetuner.partial_fit(X, y_new)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_unlisted_label_raises(cls, data):
    X, y = data
    with pytest.raises(ValueError, match=r"labels \['tech'\] that are not in classes"):
        small(cls).partial_fit(X, y, classes=["business", "sport"])


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_changed_classes_raise(cls, data):
    X, y = data
    finetuner = small(cls).partial_fit(X, y)
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        finetuner.partial_fit(X, y, classes=["business", "sport", "tech", "weather"])


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_infers_classes(cls, data):
    X, y = data
    finetuner = small(cls).partial_fit(X, y)
    assert finetuner.classes_.tolist() == ["business", "sport", "tech"]


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_one_class_raises(cls, data):
    X, y = data
    sport = y == "sport"
    with pytest.raises(ValueError, match="at least 2 classes"):
        small(cls).partial_fit(X[sport], y[sport])


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_applies_set_params(cls, data):
    X, y = data
    finetuner = small(cls).partial_fit(X, y)
    finetuner.set_params(learning_rate=0.5, weight_decay=0.2, dropout=0.3).partial_fit(X, y)
    assert finetuner.optimizer_.param_groups[0]["lr"] == 0.5
    assert finetuner.optimizer_.param_groups[0]["weight_decay"] == 0.2
    assert finetuner.network_.dropout_rate == 0.3


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_batch_of_one(cls, data):
    X, y = data
    finetuner = small(cls).partial_fit(X[:6], y[:6], classes=np.unique(y))
    finetuner.partial_fit(X[6:7], y[6:7])
    assert finetuner.n_iter_ == 2


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_continues_after_fit(cls, data):
    X, y = data
    finetuner = small(cls).fit(X, y)
    epochs = finetuner.n_iter_
    finetuner.partial_fit(X[:30], y[:30])
    assert finetuner.n_iter_ == epochs + 1
    finetuner.fit(X, y)
    assert finetuner.n_iter_ == epochs


# ----------------------------------------------------------------------
# Reproducibility, logging and side effects
# ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", FINETUNERS)
def test_random_state_bit_for_bit(cls, data):
    X, y = data
    first = small(cls, random_state=3).fit(X, y).transform(X)
    second = small(cls, random_state=3).fit(X, y).transform(X)
    other = small(cls, random_state=4).fit(X, y).transform(X)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_partial_fit_stream_reproducible(cls, data):
    X, y = data

    def stream():
        finetuner = small(cls, random_state=5)
        for start in range(0, len(y), 30):
            finetuner.partial_fit(X[start : start + 30], y[start : start + 30], classes=np.unique(y))
        return finetuner.transform(X)

    assert np.array_equal(stream(), stream())


@pytest.mark.parametrize("cls", FINETUNERS)
def test_fit_keeps_global_torch_rng(cls, data):
    X, y = data
    state = torch.random.get_rng_state()
    small(cls, dropout=0.5).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_fit_restores_torch_thread_count(cls, data):
    X, y = data
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        finetuner = small(cls).fit(X, y)
        assert torch.get_num_threads() == 2
        finetuner.partial_fit(X, y)
        assert torch.get_num_threads() == 2
        finetuner.transform(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_fit_prints_nothing(cls, data, capsys):
    X, y = data
    small(cls).fit(X, y).transform(X)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.parametrize("cls", FINETUNERS)
def test_training_progress_logged_at_debug(cls, data, caplog):
    X, y = data
    with caplog.at_level(logging.DEBUG, logger="embetter_assets.finetune"):
        small(cls, n_epochs=3, early_stopping=False).fit(X, y)
    epoch_records = [record for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert len(epoch_records) == 3
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    assert all(record.name.startswith("embetter_assets.finetune") for record in caplog.records)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_early_stopping_keeps_best_epoch(cls, data):
    X, _ = data
    # Random labels cannot be learned, so the held-out loss soon stops improving.
    y = np.random.default_rng(0).choice(["a", "b"], size=len(X))
    finetuner = small(cls, n_epochs=200, n_iter_no_change=3, learning_rate=0.01).fit(X, y)
    curve = finetuner.validation_loss_curve_
    assert finetuner.n_iter_ < 200
    assert 0 <= finetuner.n_iter_ - finetuner.best_iteration_ <= 3
    assert curve[finetuner.best_iteration_ - 1] == min(curve)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_tiny_classes_skip_validation(cls):
    X, y = make_blobs_data(n_per_class=2, labels=("a", "b"))
    finetuner = small(cls, n_epochs=4).fit(X, y)
    assert finetuner.n_iter_ == 4
    assert finetuner.validation_loss_curve_ == []


# ----------------------------------------------------------------------
# Docstring examples
# ----------------------------------------------------------------------


@pytest.mark.parametrize("module_name", ["_feedforward", "_contrastive", "_pairs", "_serialization"])
def test_docstring_examples_run(module_name):
    import doctest
    import importlib

    module = importlib.import_module(f"embetter_assets.finetune.{module_name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("cls", FINETUNERS)
def test_finetuner_given_texts_says_to_encode_them(cls):
    texts = [["a sentence about football"], ["a sentence about budgets"]] * 4

    with pytest.raises(ValueError, match=f"{cls.__name__} takes embeddings, but X contains text"):
        cls(n_epochs=1).fit(texts, ["sport", "politics"] * 4)
