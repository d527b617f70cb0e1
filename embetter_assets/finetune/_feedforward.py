"""Feed-forward finetuner: train a one-hidden-layer classifier and keep its hidden layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embetter_assets.finetune._base import BaseFinetuner, _check_real, dropout


class _FeedForwardNetwork(nn.Module):
    """Input -> linear -> sigmoid (the embedding) -> dropout -> linear -> class logits."""

    def __init__(self, n_features, hidden_dim, n_classes, dropout_rate):
        super().__init__()
        self.hidden = nn.utils.skip_init(nn.Linear, n_features, hidden_dim)
        self.output = nn.utils.skip_init(nn.Linear, hidden_dim, n_classes)
        self.dropout_rate = dropout_rate

    def embed(self, X):
        return torch.sigmoid(self.hidden(X))

    def classify(self, embedded, generator=None):
        if self.training:
            embedded = dropout(embedded, self.dropout_rate, generator)
        return self.output(embedded)


class FeedForwardFinetuner(BaseFinetuner):
    """Finetune embeddings with the hidden layer of a small feed-forward classifier.

    ``fit`` trains a network with one sigmoid hidden layer to predict the labels
    from the embeddings, and ``transform`` returns the hidden layer's activations.
    The loss has two terms. Cross-entropy on the class logits keeps the hidden
    layer predictive. A similarity term, weighted by ``similarity_weight``, pulls
    the cosine similarity of every same-label pair in a mini-batch towards 1 and
    of every other pair towards 0, so that classes form tight, separate clusters
    under cosine distance.

    A few hundred labels are easy to overfit, so training uses dropout on the
    hidden layer, AdamW's weight decay and, by default, early stopping. Early
    stopping holds out a part of every class and keeps the weights of the epoch
    with the lowest held-out loss. That loss has both terms, with held-out
    examples compared against training examples in the similarity term.

    Parameters
    ----------
    hidden_dim : int, default=50
        Width of the hidden layer, and so of the finetuned embeddings.
    n_epochs : int, default=100
        Maximum number of passes over the training data. On text tasks with a
        few hundred labels and the default learning rate, the held-out loss
        usually still improves at epoch 100, so training runs all epochs and
        early stopping only picks the best one. More epochs pull the classes
        further apart but cost held-out accuracy.
    learning_rate : float, default=0.003
        Learning rate of the AdamW optimiser.
    batch_size : int, default=32
        Examples per gradient step. The similarity term compares all pairs
        within a batch.
    weight_decay : float, default=0.01
        Decoupled weight decay of AdamW.
    dropout : float, default=0.5
        Fraction of hidden units zeroed at random before the output layer in
        each training step.
    similarity_weight : float, default=10.0
        Weight of the similarity term relative to cross-entropy. 0 trains a
        plain classifier.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of every class, stop when the held-out
        loss has not improved for ``n_iter_no_change`` epochs, and keep the
        weights of the best epoch. Classes with fewer than three examples are
        never held out.
    validation_fraction : float, default=0.1
        Fraction of every class held out for early stopping, in (0, 0.5].
    n_iter_no_change : int, default=10
        Epochs without improvement of the held-out loss before training stops.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the validation split, the batch order and
        dropout. With an integer, ``fit`` and ``transform`` give identical results
        on the same CPU build.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen in ``fit``, in sorted order and with their original type.
    n_features_in_ : int
        Width of the input embeddings.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of ``X`` in ``fit``, when ``X`` had string column names.
    n_features_out_ : int
        Width of the finetuned embeddings, equal to ``hidden_dim``.
    network_ : torch.nn.Module
        The trained network.
    optimizer_ : torch.optim.Optimizer
        The optimiser, kept so that ``partial_fit`` can continue training.
    n_iter_ : int
        Epochs trained in total.
    best_iteration_ : int
        Epoch whose weights were kept by early stopping.
    loss_curve_ : list of float
        Mean training loss of every epoch.
    validation_loss_curve_ : list of float
        Held-out loss after every epoch, empty without early stopping.

    See Also
    --------
    ContrastiveFinetuner : Learns a projection from sampled pairs of same-class
        and different-class examples.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from embetter_assets.finetune import FeedForwardFinetuner
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 16)).astype("float32")
    >>> y = np.where(X[:, 0] > 0, "positive", "negative")
    >>> tuner = FeedForwardFinetuner(hidden_dim=8, random_state=0)
    >>> tuner.fit(X, y).transform(X).shape
    (60, 8)
    >>> pipe = make_pipeline(FeedForwardFinetuner(hidden_dim=8, random_state=0), LogisticRegression())
    >>> pipe.fit(X, y).predict(X[:2]).tolist()
    ['positive', 'negative']
    """

    _kind = "feedforward"

    def __init__(
        self,
        hidden_dim=50,
        *,
        n_epochs=100,
        learning_rate=0.003,
        batch_size=32,
        weight_decay=0.01,
        dropout=0.5,
        similarity_weight=10.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=None,
    ):
        self.hidden_dim = hidden_dim
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.similarity_weight = similarity_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    def _check_extra_params(self):
        _check_real(self, "similarity_weight", minimum=0.0)

    def _build_network(self, n_features, n_classes):
        return _FeedForwardNetwork(n_features, self.hidden_dim, n_classes, float(self.dropout))

    def _initialize_network(self, network, generator):
        for layer in (network.hidden, network.output):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)

    def _output_width(self, n_features, n_classes):
        return self.hidden_dim

    def _loss(self, embedded, codes, reference, reference_codes, generator=None):
        """Cross-entropy of ``embedded`` plus the weighted similarity term against ``reference``."""
        loss = F.cross_entropy(self.network_.classify(embedded, generator), codes)
        if self.similarity_weight > 0:
            term = cosine_similarity_loss(embedded, codes, reference, reference_codes)
            if term is not None:
                loss = loss + self.similarity_weight * term
        return loss

    def _train_epoch(self, X, codes, generator):
        total, count = 0.0, 0
        for rows in self._minibatches(X.shape[0], generator):
            embedded = self.network_.embed(X[rows])
            loss = self._loss(embedded, codes[rows], embedded, codes[rows], generator)
            self._step(loss)
            total += loss.item() * rows.numel()
            count += rows.numel()
        return total / count

    def _make_validation_loss(self, X_train, codes_train, X_validation, codes_validation, generator):
        def validation_loss():
            return self._loss(
                self.network_.embed(X_validation),
                codes_validation,
                self.network_.embed(X_train),
                codes_train,
            )

        return validation_loss


def cosine_similarity_loss(embedded, codes, reference, reference_codes):
    """Return the mean squared gap between pairwise cosine similarity and label agreement.

    Every row of ``embedded`` is paired with every row of ``reference``. The target
    similarity is 1 for a pair with the same label and 0 otherwise. A target of 0
    is reachable because sigmoid activations are non-negative. When both arguments
    are the same tensor, the pairs of a row with itself are left out. Returns None
    when there is no pair.
    """
    similarity = F.normalize(embedded, dim=1) @ F.normalize(reference, dim=1).T
    target = (codes[:, None] == reference_codes[None, :]).to(similarity.dtype)
    squared_error = (similarity - target) ** 2
    if embedded is reference:
        squared_error = squared_error[~torch.eye(len(codes), dtype=torch.bool)]
    if squared_error.numel() == 0:
        return None
    return squared_error.mean()


# The name used by embetter's finetuning guide, kept so that its code runs unchanged.
ForwardFinetuner = FeedForwardFinetuner
