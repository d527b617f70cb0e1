"""Resources: the DuckDB store, the sentence encoder and the data folders."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from embetter_assets.encoder import DEFAULT_MODEL, SentenceEncoder
from embetter_assets.ingest import SUPPORTED_SUFFIXES, InvalidBatchError
from embetter_assets.partition_keys import PartitionKeyError, file_name_for_key
from embetter_assets.store import EmbeddingStore, default_data_dir, default_store_path


class StoreResource(dg.ConfigurableResource):
    """The DuckDB file every asset writes to."""

    path: str = str(default_store_path())
    lock_timeout_seconds: float = 600.0

    def get_store(self) -> EmbeddingStore:
        """Return a store handle; it opens a connection only for each read or write."""
        return EmbeddingStore(self.path, lock_timeout=self.lock_timeout_seconds)


class EncoderResource(dg.ConfigurableResource):
    """The sentence encoder behind ``base_embeddings``: a model name or local path."""

    model: str = DEFAULT_MODEL
    batch_size: int = 32
    device: str = "cpu"
    _encoder: SentenceEncoder | None = PrivateAttr(default=None)

    def get_encoder(self) -> SentenceEncoder:
        """Return the encoder, loading the model once per process."""
        if self._encoder is None:
            self._encoder = SentenceEncoder(self.model, batch_size=self.batch_size, device=self.device)
        return self._encoder


class DataFoldersResource(dg.ConfigurableResource):
    """Folders for incoming batch files and generated reports, under one root."""

    root: str = str(default_data_dir())

    @property
    def texts_dir(self) -> Path:
        return Path(self.root) / "texts"

    @property
    def labels_dir(self) -> Path:
        return Path(self.root) / "labels"

    @property
    def reports_dir(self) -> Path:
        return Path(self.root) / "reports"

    def text_file(self, partition_key: str) -> Path:
        """Return the file in ``texts/`` that text batch ``partition_key`` was made from."""
        return _batch_file(self.texts_dir, partition_key)

    def label_file(self, partition_key: str) -> Path:
        """Return the file in ``labels/`` that label batch ``partition_key`` was made from."""
        return _batch_file(self.labels_dir, partition_key)


def _batch_file(folder: Path, partition_key: str) -> Path:
    try:
        name = file_name_for_key(partition_key)
    except PartitionKeyError as error:
        raise InvalidBatchError(f"Partition key {partition_key!r} does not name a batch file in {folder}: {error}") from error
    path = folder / name
    if path.parent != folder or path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise InvalidBatchError(f"Partition key {partition_key!r} does not name a batch file in {folder}.")
    if not path.is_file():
        raise InvalidBatchError(
            f"Batch file {path} for partition {partition_key!r} not found. Restore the file, or delete the "
            "partition if the batch was withdrawn."
        )
    return path
