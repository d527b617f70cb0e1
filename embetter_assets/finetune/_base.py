"""Estimator machinery shared by the finetuners: input checks, the training loop and early stopping."""

from __future__ import annotations

import contextlib
import logging
import numbers
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from embetter_assets.finetune import _serialization

logger = logging.getLogger(__name__)

# Upper bound (exclusive) of the seeds drawn from random_state for torch generators.
_MAX_SEED = 2**31 - 1

# Smallest decrease of the validation loss that early stopping counts as an improvement.
_IMPROVEMENT_TOLERANCE = 1e-4


class BaseFinetuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of the finetuners, not meant to be used directly.

    A subclass sets ``_kind`` (the name stored in saved files) and implements
    ``_build_network``, ``_initialize_network``, ``_output_width``,
    ``_train_epoch`` and ``_make_validation_loss``. The network it builds must have an ``embed(X)`` method
    that returns the new representation.
    """

    _kind: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._kind is not None:
            _serialization.register_finetuner(cls._kind, cls)

    # ------------------------------------------------------------------
    # Parameters
    # ------------------------------------------------------------------

    def _check_params(self):
        """Raise a ValueError naming the first invalid constructor parameter."""
        _check_integer(self, "hidden_dim", minimum=1)
        _check_integer(self, "n_epochs", minimum=1)
        _check_real(self, "learning_rate", minimum=0.0, include_minimum=False)
        _check_integer(self, "batch_size", minimum=1)
        _check_real(self, "weight_decay", minimum=0.0)
        _check_real(self, "dropout", minimum=0.0, maximum=1.0, include_maximum=False)
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(
                f"early_stopping of {type(self).__name__} must be True or False, got {self.early_stopping!r}."
            )
        _check_real(self, "validation_fraction", minimum=0.0, maximum=0.5, include_minimum=False)
        _check_integer(self, "n_iter_no_change", minimum=1)
        self._check_extra_params()

    def _check_extra_params(self):
        """Check the parameters that only a subclass has. The base class has none."""

    # ------------------------------------------------------------------
    # scikit-learn API
    # ------------------------------------------------------------------

    def fit(self, X, y):
        """Train a new network on ``X`` and ``y``, discarding any earlier training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings to finetune.
        y : array-like of shape (n_samples,)
            Class labels, strings or integers. At least two classes, each with at
            least two examples.

        Returns
        -------
        self : object
            The fitted finetuner.
        """
        self._check_params()
        X, y = _validate_embeddings(self, X, y, y_numeric=False)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        codes = encoder.transform(y)
        _check_class_counts(encoder.classes_, np.bincount(codes), type(self).__name__)

        self.classes_ = encoder.classes_
        self._seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        generator = torch.Generator().manual_seed(self._seed)
        self._start_network(generator)

        started = time.perf_counter()
        with _single_torch_thread():
            self._train(
                X, codes, generator=generator, n_epochs=self.n_epochs, early_stopping=self.early_stopping
            )
        logger.debug(
            "%s trained for %d epochs on %d examples in %.2f s",
            type(self).__name__,
            self.n_iter_,
            X.shape[0],
            time.perf_counter() - started,
        )
        return self

    def partial_fit(self, X, y, classes=None):
        """Train for one epoch on a batch, continuing from earlier calls.

        The first call on an unfitted finetuner builds the network with one output
        per label in ``classes``. Later calls continue training the same network,
        and a call to ``fit`` discards it. Parameters changed with ``set_params``
        between calls apply from the next call, except ``hidden_dim``, which fixes
        the shape of the network. No early stopping is done here, because one
        batch is too small to hold out a validation set from.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch of embeddings.
        y : array-like of shape (n_samples,)
            Labels of the batch. Every label must be in ``classes``.
        classes : array-like of shape (n_classes,), default=None
            Every label that the stream can contain. On the first call, None means
            the labels of this batch, which must then hold at least two classes.
            On later calls it must match ``classes_`` when given.

        Returns
        -------
        self : object
            The partially fitted finetuner.
        """
        self._check_params()
        first_call = not hasattr(self, "classes_")
        if first_call:
            if classes is not None:
                classes = np.unique(column_or_1d(classes))
                _check_at_least_two_classes(classes, type(self).__name__)
        elif classes is not None and not np.array_equal(np.unique(column_or_1d(classes)), self.classes_):
            raise ValueError(
                f"classes={_label_list(np.unique(classes))} differs from the classes of the first call, "
                f"{_label_list(self.classes_)}. Call fit to start over with new classes."
            )

        X, y = _validate_embeddings(self, X, y, reset=first_call, y_numeric=False)
        check_classification_targets(y)
        if first_call and classes is None:
            classes = np.unique(y)
            _check_at_least_two_classes(classes, type(self).__name__)
        known_classes = self.classes_ if not first_call else classes
        unknown = np.setdiff1d(np.unique(y), known_classes)
        if unknown.size:
            raise ValueError(
                f"y contains labels {_label_list(unknown)} that are not in classes {_label_list(known_classes)}. "
                "Pass every label of the stream as classes on the first call to partial_fit."
            )

        if first_call:
            self.classes_ = classes
            self._seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
            self._start_network(torch.Generator().manual_seed(self._seed))
        codes = np.searchsorted(self.classes_, y)
        # A fresh generator per call, derived from the seed and the epochs so far, keeps a
        # stream of partial_fit calls reproducible without storing generator state.
        generator = torch.Generator().manual_seed((self._seed + self.n_iter_) % _MAX_SEED)
        self._apply_training_params()
        with _single_torch_thread():
            self._train(X, codes, generator=generator, n_epochs=1, early_stopping=False)
        return self

    def transform(self, X):
        """Map embeddings into the finetuned space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings with the same width as the training embeddings.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out_), dtype float32
            The finetuned embeddings.
        """
        check_is_fitted(self)
        X = _validate_embeddings(self, X, reset=False)
        self.network_.eval()
        with torch.no_grad(), _single_torch_thread():
            embedded = self.network_.embed(torch.from_numpy(np.ascontiguousarray(X)))
        return embedded.numpy().astype(np.float32, copy=False)

    @property
    def _n_features_out(self):
        # Read by ClassNamePrefixFeaturesOutMixin.get_feature_names_out.
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise the fitted finetuner as safetensors weights with JSON metadata.

        The metadata contains the kind of finetuner, its parameters, the classes with
        their dtype and the training history. Loading it back runs no pickled code.

        Returns
        -------
        blob : bytes
            Input for ``load_finetuner``.
        """
        check_is_fitted(self)
        return _serialization.finetuner_to_bytes(self)

    def save(self, path):
        """Write ``to_bytes()`` to the file ``path``."""
        blob = self.to_bytes()
        with open(path, "wb") as file:
            file.write(blob)

    @classmethod
    def load(cls, path):
        """Load a finetuner saved by ``save`` from the file ``path``.

        Raises
        ------
        ValueError
            If the file is not a saved finetuner, or contains another kind
            of finetuner than ``cls``.
        """
        with open(path, "rb") as file:
            blob = file.read()
        finetuner = _serialization.finetuner_from_bytes(blob)
        if not isinstance(finetuner, cls):
            raise ValueError(
                f"{path} contains a {type(finetuner).__name__}, not a {cls.__name__}. "
                f"Load it with {type(finetuner).__name__}.load or load_finetuner."
            )
        return finetuner

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def _start_network(self, generator):
        """Build and initialise a new network, resetting the training history."""
        n_classes = len(self.classes_)
        self.network_ = self._build_network(self.n_features_in_, n_classes)
        self._initialize_network(self.network_, generator)
        self.n_features_out_ = int(self._output_width(self.n_features_in_, n_classes))
        self.optimizer_ = self._make_optimizer()
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.validation_loss_curve_ = []

    def _make_optimizer(self):
        return torch.optim.AdamW(
            self.network_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )

    def _apply_training_params(self):
        """Copy the current dropout, learning rate and weight decay into the network and optimiser.

        This makes ``set_params`` between ``partial_fit`` calls take effect. A loaded
        finetuner has no optimiser yet and gets a new one here.
        """
        self.network_.dropout_rate = float(self.dropout)
        if not hasattr(self, "optimizer_"):
            self.optimizer_ = self._make_optimizer()
        for group in self.optimizer_.param_groups:
            group["lr"] = self.learning_rate
            group["weight_decay"] = self.weight_decay

    def _train(self, X, codes, *, generator, n_epochs, early_stopping):
        """Run up to ``n_epochs`` epochs, with early stopping on a held-out split if asked."""
        X = torch.from_numpy(np.ascontiguousarray(X))
        codes = torch.from_numpy(np.asarray(codes, dtype=np.int64))
        validation_loss_function = None
        if early_stopping:
            train_rows, validation_rows = _stratified_split(codes, self.validation_fraction, generator)
            if validation_rows.numel():
                validation_loss_function = self._make_validation_loss(
                    X[train_rows], codes[train_rows], X[validation_rows], codes[validation_rows], generator
                )
                X, codes = X[train_rows], codes[train_rows]
            else:
                logger.debug(
                    "%s: no class has 3 or more examples, so no validation set is held out "
                    "and training runs all %d epochs without early stopping",
                    type(self).__name__,
                    n_epochs,
                )

        best_loss = np.inf
        best_state = None
        epochs_without_improvement = 0
        for _ in range(n_epochs):
            self.network_.train()
            training_loss = self._train_epoch(X, codes, generator)
            self.n_iter_ += 1
            self.loss_curve_.append(float(training_loss))
            if validation_loss_function is None:
                logger.debug("epoch %d: training loss %.4f", self.n_iter_, training_loss)
                continue

            self.network_.eval()
            with torch.no_grad():
                validation_loss = float(validation_loss_function())
            self.validation_loss_curve_.append(validation_loss)
            logger.debug(
                "epoch %d: training loss %.4f, validation loss %.4f",
                self.n_iter_,
                training_loss,
                validation_loss,
            )
            # Keep the weights of the lowest loss seen, but count only improvements larger
            # than the tolerance as progress, so that a long flat tail ends training.
            if validation_loss < best_loss - _IMPROVEMENT_TOLERANCE:
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            if validation_loss < best_loss:
                best_loss = validation_loss
                best_state = {name: value.clone() for name, value in self.network_.state_dict().items()}
                self.best_iteration_ = self.n_iter_
            if epochs_without_improvement >= self.n_iter_no_change:
                logger.debug(
                    "stopping early after epoch %d: validation loss has not improved by more than %g "
                    "for %d epochs, so the weights of epoch %d are kept",
                    self.n_iter_,
                    _IMPROVEMENT_TOLERANCE,
                    self.n_iter_no_change,
                    self.best_iteration_,
                )
                break
        if best_state is not None:
            self.network_.load_state_dict(best_state)

    def _minibatches(self, n_rows, generator):
        """Yield shuffled row indices in batches of ``batch_size``."""
        permutation = torch.randperm(n_rows, generator=generator)
        for start in range(0, n_rows, self.batch_size):
            yield permutation[start : start + self.batch_size]

    def _step(self, loss):
        self.optimizer_.zero_grad()
        loss.backward()
        self.optimizer_.step()


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------


@contextlib.contextmanager
def _single_torch_thread():
    """Run torch on one thread inside the block, then restore the previous thread count.

    The networks are small, so extra threads only add synchronisation. On a busy
    machine that cost dominates: a backward pass through a 24 x 200 layer took
    about 30 ms with two threads against 0.04 ms with one (2-core VM under load).
    """
    # NOTE: torch's thread count is process-wide, so torch code running in another
    # Python thread at the same time also runs on one thread until the block ends.
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def dropout(values, rate, generator):
    """Apply inverted dropout with an explicit generator, so training stays reproducible."""
    if rate == 0.0:
        return values
    keep = torch.rand(values.shape, generator=generator) >= rate
    return values * keep / (1.0 - rate)


def _stratified_split(codes, fraction, generator):
    """Split rows into training and validation, taking ``fraction`` of every class.

    Classes with fewer than three examples stay in training entirely, so that every
    class keeps at least two training examples.
    """
    train_parts, validation_parts = [], []
    for code in torch.unique(codes):
        rows = torch.nonzero(codes == code).ravel()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        n_validation = 0
        if rows.numel() >= 3:
            n_validation = min(max(1, int(round(fraction * rows.numel()))), rows.numel() - 2)
        validation_parts.append(rows[:n_validation])
        train_parts.append(rows[n_validation:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(validation_parts)).values


def _label_list(labels):
    """Format labels for an error message as a plain Python list, without NumPy type names."""
    return repr(np.asarray(labels).tolist())


def _check_at_least_two_classes(classes, name):
    if len(classes) < 2:
        raise ValueError(
            f"{name} needs at least 2 classes to learn from, got 1 class: {_label_list(classes)}. "
            "Add examples of another class."
        )


def _check_class_counts(classes, counts, name):
    _check_at_least_two_classes(classes, name)
    singletons = classes[counts < 2]
    if singletons.size:
        raise ValueError(
            f"{name} needs at least 2 examples of every class, but class(es) {_label_list(singletons)} "
            "have only 1. Add examples of these classes or drop them."
        )


def _check_integer(estimator, name, *, minimum):
    value = getattr(estimator, name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{name} of {type(estimator).__name__} must be an integer >= {minimum}, got {value!r}."
        )


def _validate_embeddings(estimator, X, y="no_validation", **options):
    """Validate ``X`` (and ``y``) as scikit-learn does, naming the usual mistake of passing texts."""
    try:
        return validate_data(estimator, X, y, dtype=np.float32, **options)
    except ValueError as error:
        if "could not convert string to float" not in str(error):
            raise
        raise ValueError(
            f"{type(estimator).__name__} takes embeddings, but X contains text. Encode the texts first, for "
            "example with SentenceEncoder().transform(texts), or put the encoder before the finetuner in a "
            "pipeline."
        ) from None


def _check_real(estimator, name, *, minimum, maximum=None, include_minimum=True, include_maximum=True):
    value = getattr(estimator, name)
    valid = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)
    if valid:
        valid = value >= minimum if include_minimum else value > minimum
    if valid and maximum is not None:
        valid = value <= maximum if include_maximum else value < maximum
    if not valid:
        low = "[" if include_minimum else "("
        if maximum is None:
            interval = f"{low}{minimum}, inf)"
        else:
            interval = f"{low}{minimum}, {maximum}{']' if include_maximum else ')'}"
        raise ValueError(
            f"{name} of {type(estimator).__name__} must be a finite number in {interval}, got {value!r}."
        )
