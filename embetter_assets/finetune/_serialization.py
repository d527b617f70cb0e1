"""Save and load fitted finetuners as safetensors weights plus JSON metadata, without pickle.

The blob is a standard safetensors file: the network's ``state_dict`` as tensors, and
under the ``__metadata__`` key of its header one JSON string that describes the
finetuner (kind, constructor parameters, classes with their dtype, training history).
Loading parses tensors and JSON only, so it runs no code that comes with the blob.
"""

from __future__ import annotations

import json
import numbers
import os
import struct

import numpy as np
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

FORMAT_NAME = "embetter_assets.finetuner"
FORMAT_VERSION = 1
_METADATA_KEY = "embetter_assets"

# Finetuner classes by the ``kind`` written into their files, filled by
# BaseFinetuner.__init_subclass__.
_FINETUNER_KINDS: dict[str, type] = {}


def register_finetuner(kind, cls):
    """Record ``cls`` as the class that loads files of ``kind``."""
    _FINETUNER_KINDS[kind] = cls


def finetuner_to_bytes(finetuner) -> bytes:
    """Serialise a fitted finetuner in the layout described in the module docstring."""
    params = {}
    for name, value in finetuner.get_params(deep=False).items():
        if name == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
            # NOTE: a RandomState or Generator instance cannot be written as JSON, so a
            # loaded finetuner gets random_state=None. Its weights are unaffected.
            value = None
        params[name] = _to_json_scalar(value, f"parameter {name}")

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": finetuner._kind,
        "params": params,
        "classes": _classes_to_json(finetuner.classes_),
        "n_features_in": int(finetuner.n_features_in_),
        "n_features_out": int(finetuner.n_features_out_),
        "feature_names_in": (
            [str(name) for name in finetuner.feature_names_in_]
            if hasattr(finetuner, "feature_names_in_")
            else None
        ),
        "seed": int(finetuner._seed),
        "n_iter": int(finetuner.n_iter_),
        "best_iteration": getattr(finetuner, "best_iteration_", None),
        "loss_curve": [float(value) for value in finetuner.loss_curve_],
        "validation_loss_curve": [float(value) for value in finetuner.validation_loss_curve_],
    }
    tensors = {name: tensor.detach().contiguous() for name, tensor in finetuner.network_.state_dict().items()}
    return save_tensors(tensors, metadata={_METADATA_KEY: json.dumps(metadata)})


def finetuner_from_bytes(blob):
    """Rebuild a fitted finetuner from the output of ``finetuner_to_bytes``."""
    blob = bytes(blob)
    metadata = _read_metadata(blob)
    kind = metadata.get("kind")
    if kind not in _FINETUNER_KINDS:
        raise ValueError(
            f"The blob contains a finetuner of unknown kind {kind!r}. Known kinds are {sorted(_FINETUNER_KINDS)!r}."
        )
    cls = _FINETUNER_KINDS[kind]
    valid_params = set(cls().get_params(deep=False))
    unknown_params = sorted(set(metadata["params"]) - valid_params)
    if unknown_params:
        raise ValueError(
            f"The blob sets parameters {unknown_params!r} that {cls.__name__} does not have, so "
            "it was probably written by a newer version of embetter_assets. Upgrade embetter_assets to load it."
        )

    finetuner = cls(**metadata["params"])
    finetuner.classes_ = _classes_from_json(metadata["classes"])
    finetuner.n_features_in_ = metadata["n_features_in"]
    if metadata.get("feature_names_in") is not None:
        finetuner.feature_names_in_ = np.asarray(metadata["feature_names_in"], dtype=object)
    finetuner._seed = metadata["seed"]
    finetuner.n_iter_ = metadata["n_iter"]
    if metadata.get("best_iteration") is not None:
        finetuner.best_iteration_ = metadata["best_iteration"]
    finetuner.loss_curve_ = list(metadata["loss_curve"])
    finetuner.validation_loss_curve_ = list(metadata["validation_loss_curve"])

    network = finetuner._build_network(finetuner.n_features_in_, len(finetuner.classes_))
    try:
        network.load_state_dict(load_tensors(blob), strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"The weights in the blob do not fit a {cls.__name__} with the saved parameters and "
            f"{finetuner.n_features_in_} input features: {error}"
        ) from error
    finetuner.network_ = network
    finetuner.n_features_out_ = metadata["n_features_out"]
    return finetuner


def load_finetuner(source):
    """Load a fitted finetuner of any kind from bytes or from a file.

    Parameters
    ----------
    source : bytes or path-like
        The output of ``to_bytes()``, or the path of a file written by ``save()``.

    Returns
    -------
    finetuner : FeedForwardFinetuner or ContrastiveFinetuner
        A fitted finetuner that transforms exactly like the one saved.

    Raises
    ------
    ValueError
        If ``source`` is not a saved finetuner.

    Examples
    --------
    >>> import numpy as np
    >>> from embetter_assets.finetune import FeedForwardFinetuner, load_finetuner
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(40, 8)), np.repeat(["spam", "ham"], 20)
    >>> tuner = FeedForwardFinetuner(hidden_dim=4, random_state=0).fit(X, y)
    >>> loaded = load_finetuner(tuner.to_bytes())
    >>> bool(np.array_equal(loaded.transform(X), tuner.transform(X)))
    True
    >>> loaded.classes_
    array(['ham', 'spam'], dtype='<U4')
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return finetuner_from_bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return finetuner_from_bytes(file.read())
    raise TypeError(f"load_finetuner expects bytes or a file path, got {type(source).__name__}.")


def _read_metadata(blob):
    """Parse the JSON metadata from a safetensors header: 8-byte little-endian length, then JSON."""
    invalid = "The blob is not a finetuner saved by embetter_assets"
    if len(blob) < 8:
        raise ValueError(f"{invalid}: it is only {len(blob)} bytes long.")
    (header_length,) = struct.unpack("<Q", blob[:8])
    if header_length > len(blob) - 8:
        raise ValueError(
            f"{invalid}: its header length {header_length} exceeds its size of {len(blob)} bytes."
        )
    try:
        header = json.loads(blob[8 : 8 + header_length])
        metadata = json.loads(header["__metadata__"][_METADATA_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{invalid}: its safetensors header has no readable finetuner metadata.") from error
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{invalid}: its metadata names the format {metadata.get('format')!r}.")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"The blob uses finetuner format version {metadata.get('format_version')!r}, but "
            f"this version of embetter_assets reads version {FORMAT_VERSION}."
        )
    return metadata


def _classes_to_json(classes):
    """Describe ``classes_`` so that loading restores the same values and dtype."""
    classes = np.asarray(classes)
    values = [_to_json_scalar(value, "class label") for value in classes.tolist()]
    return {"dtype": classes.dtype.str, "values": values}


def _classes_from_json(description):
    dtype = np.dtype(description["dtype"])
    if dtype.kind == "O":
        classes = np.empty(len(description["values"]), dtype=object)
        classes[:] = description["values"]
        return classes
    return np.asarray(description["values"], dtype=dtype)


def _to_json_scalar(value, what):
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"Cannot save {what} {value!r} of type {type(value).__name__}: only None, booleans, numbers and strings "
        "can be written to a finetuner file."
    )
