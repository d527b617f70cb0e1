"""Contrastive finetuner: learn a projection that pulls same-class pairs together."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embetter_assets.finetune._base import BaseFinetuner, _check_integer, dropout
from embetter_assets.finetune._pairs import sample_pairs


class _ProjectionNetwork(nn.Module):
    """Linear layer followed by a sigmoid, applied with the same weights to both sides of a pair."""

    def __init__(self, n_features, hidden_dim, dropout_rate):
        super().__init__()
        self.projection = nn.utils.skip_init(nn.Linear, n_features, hidden_dim)
        self.dropout_rate = dropout_rate

    def embed(self, X):
        return torch.sigmoid(self.projection(X))

    def forward(self, X, generator=None):
        if self.training:
            X = dropout(X, self.dropout_rate, generator)
        return self.embed(X)


class ContrastiveFinetuner(BaseFinetuner):
    """Finetune embeddings with a projection trained on same-class and different-class pairs.

    Every epoch draws new pairs of training examples with ``sample_pairs``: for
    each example, ``n_pos`` partners from its own class and ``n_neg`` from other
    classes. A linear layer followed by a sigmoid, shared by both sides of a pair,
    is trained so that the cosine similarity of a same-class pair approaches 1 and
    that of a different-class pair approaches 0 (squared error). ``transform``
    applies the trained layer. By default training stops early when the pair loss
    of held-out examples stops improving.

    Parameters
    ----------
    hidden_dim : int, default=50
        Width of the projection, and so of the finetuned embeddings.
    n_epochs : int, default=20
        Maximum number of passes. Each pass samples new pairs.
    learning_rate : float, default=0.02
        Learning rate of the AdamW optimiser.
    batch_size : int, default=256
        Pairs per gradient step.
    weight_decay : float, default=0.01
        Decoupled weight decay of AdamW.
    dropout : float, default=0.0
        Fraction of input features zeroed at random in each training step.
    n_pos : int, default=1
        Same-class pairs drawn per example and epoch.
    n_neg : int, default=3
        Different-class pairs drawn per example and epoch.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of every class, stop when the pair loss
        of pairs anchored on held-out examples has not improved for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch.
        Classes with fewer than three examples are never held out.
    validation_fraction : float, default=0.1
        Fraction of every class held out for early stopping, in (0, 0.5].
    n_iter_no_change : int, default=5
        Epochs without improvement of the validation loss before training stops.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the validation split, pair sampling, the batch
        order and dropout. With an integer, ``fit`` and ``transform`` give
        identical results on the same CPU build.

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
        The trained projection.
    optimizer_ : torch.optim.Optimizer
        The optimiser, kept so that ``partial_fit`` can continue training.
    n_iter_ : int
        Epochs trained in total.
    best_iteration_ : int
        Epoch whose weights were kept by early stopping.
    loss_curve_ : list of float
        Mean training pair loss of every epoch.
    validation_loss_curve_ : list of float
        Validation pair loss after every epoch, empty without early stopping.

    See Also
    --------
    FeedForwardFinetuner : Keeps the hidden layer of a classifier trained on the labels.
    sample_pairs : The pair sampler used in every epoch.

    Notes
    -----
    A ``partial_fit`` batch draws its pairs within the batch. An example that is
    alone in its class within the batch gets no same-class pair.

    Examples
    --------
    >>> import numpy as np
    >>> from embetter_assets.finetune import ContrastiveFinetuner
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 16)).astype("float32")
    >>> y = np.where(X[:, 0] > 0, "positive", "negative")
    >>> tuner = ContrastiveFinetuner(hidden_dim=8, random_state=0).fit(X, y)
    >>> tuner.transform(X).shape
    (60, 8)
    >>> tuner.get_feature_names_out()[:2].tolist()
    ['contrastivefinetuner0', 'contrastivefinetuner1']
    """

    _kind = "contrastive"

    def __init__(
        self,
        hidden_dim=50,
        *,
        n_epochs=20,
        learning_rate=0.02,
        batch_size=256,
        weight_decay=0.01,
        dropout=0.0,
        n_pos=1,
        n_neg=3,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=5,
        random_state=None,
    ):
        self.hidden_dim = hidden_dim
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.n_pos = n_pos
        self.n_neg = n_neg
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    def _check_extra_params(self):
        _check_integer(self, "n_pos", minimum=0)
        _check_integer(self, "n_neg", minimum=0)
        if self.n_pos + self.n_neg == 0:
            raise ValueError(
                "n_pos and n_neg of ContrastiveFinetuner are both 0, so no pairs would be drawn."
            )

    def _build_network(self, n_features, n_classes):
        return _ProjectionNetwork(n_features, self.hidden_dim, float(self.dropout))

    def _initialize_network(self, network, generator):
        nn.init.xavier_uniform_(network.projection.weight, generator=generator)
        nn.init.zeros_(network.projection.bias)

    def _output_width(self, n_features, n_classes):
        return self.hidden_dim

    @staticmethod
    def _pair_loss(first, second, is_positive):
        similarity = F.cosine_similarity(first, second, dim=1)
        return ((similarity - is_positive.to(similarity.dtype)) ** 2).mean()

    def _sample_pairs(self, codes, generator):
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        first, second, is_positive = sample_pairs(codes.numpy(), n_pos=self.n_pos, n_neg=self.n_neg, rng=seed)
        return torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(is_positive)

    def _train_epoch(self, X, codes, generator):
        first, second, is_positive = self._sample_pairs(codes, generator)
        if first.numel() == 0:
            return float("nan")
        total = 0.0
        for rows in self._minibatches(first.numel(), generator):
            # One forward pass embeds both sides of every pair in the batch.
            embedded = self.network_(X[torch.cat([first[rows], second[rows]])], generator)
            loss = self._pair_loss(embedded[: rows.numel()], embedded[rows.numel() :], is_positive[rows])
            self._step(loss)
            total += loss.item() * rows.numel()
        return total / first.numel()

    def _make_validation_loss(self, X_train, codes_train, X_validation, codes_validation, generator):
        # Pairs are drawn once, so that the loss is comparable between epochs. Every pair has
        # a held-out example as anchor and a partner from either split.
        X_all = torch.cat([X_validation, X_train])
        codes_all = torch.cat([codes_validation, codes_train])
        first, second, is_positive = self._sample_pairs(codes_all, generator)
        keep = first < X_validation.shape[0]
        first, second, is_positive = first[keep], second[keep], is_positive[keep]

        def validation_loss():
            embedded = self.network_(X_all)
            return self._pair_loss(embedded[first], embedded[second], is_positive)

        return validation_loss
