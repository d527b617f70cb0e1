"""Finetuners that steer embeddings towards a labelling task, as scikit-learn transformers.

Two finetuners learn a new representation from a few hundred labels:

- ``FeedForwardFinetuner`` (alias ``ForwardFinetuner``) trains a small classifier and
  returns its hidden layer;
- ``ContrastiveFinetuner`` trains a linear projection on pairs of examples that share,
  or do not share, a label.

Both fit into ``sklearn.pipeline.make_pipeline``, support ``partial_fit`` and save their
weights as safetensors plus JSON metadata, which ``load_finetuner`` reads back.
``sample_pairs`` is the vectorised pair sampler of the contrastive finetuner. This
package does not import Dagster.
"""

from embetter_assets.finetune._contrastive import ContrastiveFinetuner
from embetter_assets.finetune._feedforward import FeedForwardFinetuner, ForwardFinetuner
from embetter_assets.finetune._pairs import sample_pairs
from embetter_assets.finetune._serialization import load_finetuner

__all__ = [
    "FeedForwardFinetuner",
    "ForwardFinetuner",
    "ContrastiveFinetuner",
    "load_finetuner",
    "sample_pairs",
]
