"""Steer sentence embeddings towards a labelling task.

The library part (encoder and finetuners) needs no Dagster; the pipeline lives in
``embetter_assets.definitions``.
"""

from embetter_assets.encoder import SentenceEncoder
from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner, ForwardFinetuner

__all__ = ["SentenceEncoder", "FeedForwardFinetuner", "ForwardFinetuner", "ContrastiveFinetuner"]
