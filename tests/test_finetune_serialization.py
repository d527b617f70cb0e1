"""Saving and loading finetuners as safetensors weights plus JSON metadata."""

import json
import struct

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner, load_finetuner

FINETUNERS = [FeedForwardFinetuner, ContrastiveFinetuner]


def make_data(labels=("ham", "spam", "eggs"), n_per_class=12, n_features=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(len(labels), n_features))
    X = np.concatenate([centre + rng.normal(size=(n_per_class, n_features)) for centre in centres])
    return X.astype(np.float32), np.repeat(np.asarray(labels), n_per_class)


def fitted(cls, labels=("ham", "spam", "eggs"), **params):
    X, y = make_data(labels)
    return cls(**{"hidden_dim": 5, "n_epochs": 5, "random_state": 0, **params}).fit(X, y), X


def read_header(blob):
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length])


@pytest.mark.parametrize("cls", FINETUNERS)
def test_round_trip_transforms_identically(cls):
    finetuner, X = fitted(cls)
    loaded = load_finetuner(finetuner.to_bytes())
    assert type(loaded) is cls
    assert np.array_equal(loaded.transform(X), finetuner.transform(X))


@pytest.mark.parametrize("cls", FINETUNERS)
def test_round_trip_keeps_parameters_and_history(cls):
    finetuner, _ = fitted(cls, learning_rate=0.02, batch_size=7)
    loaded = load_finetuner(finetuner.to_bytes())
    assert loaded.get_params() == finetuner.get_params()
    assert loaded.n_features_in_ == finetuner.n_features_in_
    assert loaded.n_features_out_ == finetuner.n_features_out_
    assert loaded.n_iter_ == finetuner.n_iter_
    assert loaded.best_iteration_ == finetuner.best_iteration_
    assert loaded.loss_curve_ == pytest.approx(finetuner.loss_curve_)
    assert loaded.validation_loss_curve_ == pytest.approx(finetuner.validation_loss_curve_)
    assert loaded.get_feature_names_out().tolist() == finetuner.get_feature_names_out().tolist()


@pytest.mark.parametrize("cls", FINETUNERS)
@pytest.mark.parametrize(
    "labels",
    [
        np.array(["ham", "spam", "eggs"]),
        np.array(["ham", "spam", "eggs"], dtype=object),
        np.array([4, 8, 15]),
        np.array([-1, 1], dtype=np.int8),
        np.array([0.0, 1.0]),
        np.array([False, True]),
    ],
    ids=["unicode", "object", "int64", "int8", "float", "bool"],
)
def test_round_trip_keeps_class_values_and_dtype(cls, labels):
    finetuner, _ = fitted(cls, labels=labels)
    loaded = load_finetuner(finetuner.to_bytes())
    assert loaded.classes_.dtype == finetuner.classes_.dtype
    assert loaded.classes_.tolist() == finetuner.classes_.tolist()


@pytest.mark.parametrize("cls", FINETUNERS)
def test_save_and_load_file(cls, tmp_path):
    finetuner, X = fitted(cls)
    path = tmp_path / "finetuner.safetensors"
    finetuner.save(path)
    assert path.read_bytes() == finetuner.to_bytes()
    assert np.array_equal(cls.load(path).transform(X), finetuner.transform(X))
    assert np.array_equal(load_finetuner(path).transform(X), finetuner.transform(X))
    assert np.array_equal(load_finetuner(str(path)).transform(X), finetuner.transform(X))


def test_load_with_wrong_class_raises(tmp_path):
    finetuner, _ = fitted(ContrastiveFinetuner)
    path = tmp_path / "contrastive.safetensors"
    finetuner.save(path)
    with pytest.raises(ValueError, match="contains a ContrastiveFinetuner, not a FeedForwardFinetuner"):
        FeedForwardFinetuner.load(path)


@pytest.mark.parametrize("cls", FINETUNERS)
def test_blob_is_safetensors_with_json_metadata(cls):
    finetuner, _ = fitted(cls)
    header = read_header(finetuner.to_bytes())
    metadata = json.loads(header["__metadata__"]["embetter_assets"])
    assert metadata["kind"] == finetuner._kind
    assert metadata["classes"] == {"dtype": "<U4", "values": ["eggs", "ham", "spam"]}
    assert metadata["params"]["hidden_dim"] == 5
    tensor_names = set(header) - {"__metadata__"}
    assert tensor_names == set(finetuner.network_.state_dict())


@pytest.mark.parametrize("cls", FINETUNERS)
def test_loaded_finetuner_continues_with_partial_fit(cls):
    finetuner, X = fitted(cls)
    loaded = load_finetuner(finetuner.to_bytes())
    _, y = make_data()
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == finetuner.n_iter_ + 1


@pytest.mark.parametrize("cls", FINETUNERS)
def test_unfitted_to_bytes_raises(cls):
    with pytest.raises(NotFittedError):
        cls().to_bytes()


def test_random_state_instance_saved_as_none():
    finetuner, X = fitted(FeedForwardFinetuner, random_state=np.random.RandomState(0))
    loaded = load_finetuner(finetuner.to_bytes())
    assert loaded.random_state is None
    assert np.array_equal(loaded.transform(X), finetuner.transform(X))


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "only 0 bytes long"),
        (b"\xff" * 16, "header length .* exceeds"),
        (struct.pack("<Q", 2) + b"{}", "no readable finetuner metadata"),
        (struct.pack("<Q", 4) + b"\x80abc", "no readable finetuner metadata"),
    ],
    ids=["empty", "bad-length", "no-metadata", "not-json"],
)
def test_invalid_blob_raises(blob, message):
    with pytest.raises(ValueError, match=message):
        load_finetuner(blob)


def test_unknown_kind_raises():
    finetuner, _ = fitted(FeedForwardFinetuner)
    blob = finetuner.to_bytes().replace(b'\\"kind\\": \\"feedforward\\"', b'\\"kind\\": \\"feedbackward\\"')
    with pytest.raises(ValueError, match="unknown kind 'feedbackward'"):
        load_finetuner(blob)


def test_mismatched_weights_raise():
    finetuner, _ = fitted(FeedForwardFinetuner)
    blob = finetuner.to_bytes().replace(b'\\"hidden_dim\\": 5', b'\\"hidden_dim\\": 7')
    with pytest.raises(ValueError, match="do not fit a FeedForwardFinetuner"):
        load_finetuner(blob)


def test_newer_format_version_raises():
    finetuner, _ = fitted(FeedForwardFinetuner)
    blob = finetuner.to_bytes().replace(b'\\"format_version\\": 1', b'\\"format_version\\": 9')
    with pytest.raises(ValueError, match="format version 9"):
        load_finetuner(blob)


def test_non_bytes_source_raises():
    with pytest.raises(TypeError, match="expects bytes or a file path, got int"):
        load_finetuner(42)


def test_load_does_not_unpickle(monkeypatch):
    finetuner, X = fitted(FeedForwardFinetuner)
    blob = finetuner.to_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used while loading a finetuner")

    monkeypatch.setattr("pickle.loads", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("torch.load", refuse)
    assert np.array_equal(load_finetuner(blob).transform(X), finetuner.transform(X))
