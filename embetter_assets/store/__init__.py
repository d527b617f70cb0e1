"""The DuckDB store: every table the pipeline writes, behind parameterised SQL.

``EmbeddingStore`` (in ``_store``) reads and writes; ``_schema`` creates the tables and views;
``_files`` handles the file itself: its default path, its storage format and its header.
"""

from embetter_assets.store._files import (
    DATA_DIR_VARIABLE,
    PATH_VARIABLE,
    STORAGE_VERSION,
    StoreError,
    default_data_dir,
    default_store_path,
)
from embetter_assets.store._store import EmbeddingStore

__all__ = [
    "DATA_DIR_VARIABLE",
    "PATH_VARIABLE",
    "STORAGE_VERSION",
    "EmbeddingStore",
    "StoreError",
    "default_data_dir",
    "default_store_path",
]
