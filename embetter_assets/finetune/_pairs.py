"""Vectorised sampling of positive and negative pairs for contrastive training."""

from __future__ import annotations

import numpy as np


def sample_pairs(labels, *, n_pos=1, n_neg=3, rng=None):
    """Sample index pairs that share a label (positives) and that do not (negatives).

    Every example is the anchor of ``n_pos`` positive and ``n_neg`` negative pairs.
    A positive partner is drawn uniformly from the other examples of the anchor's
    class, so an example is never paired with itself. A negative partner is drawn
    uniformly from the examples of every other class. Partners are drawn with
    replacement, so an anchor can meet the same partner twice.

    Sampling uses array operations only. The examples are sorted by label once,
    and each draw is an offset into the block of the anchor's class or into the
    rest of the sorted order. No Python loop runs per pair.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Class of each example. Any values that ``numpy.unique`` can sort work,
        strings included.
    n_pos : int, default=1
        Positive pairs per anchor.
    n_neg : int, default=3
        Negative pairs per anchor.
    rng : int, numpy.random.Generator or None, default=None
        Source of randomness, passed to ``numpy.random.default_rng``.

    Returns
    -------
    first : ndarray of shape (n_pairs,), dtype int64
        Index of the anchor of each pair.
    second : ndarray of shape (n_pairs,), dtype int64
        Index of the partner of each pair.
    is_positive : ndarray of shape (n_pairs,), dtype bool
        True where both examples share a label.

    Notes
    -----
    An example that is alone in its class has no positive partner, so it anchors
    negative pairs only. When every example has the same label there are no
    negative partners, so only positive pairs come back. Fewer than two examples
    give no pairs at all.

    Examples
    --------
    >>> import numpy as np
    >>> first, second, is_positive = sample_pairs(["a", "a", "b", "b"], n_pos=1, n_neg=2, rng=0)
    >>> first.shape, int(is_positive.sum())
    ((12,), 4)
    >>> labels = np.array(["a", "a", "b", "b"])
    >>> bool(np.all((labels[first] == labels[second]) == is_positive))
    True
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got an array of shape {labels.shape}.")
    for name, value in (("n_pos", n_pos), ("n_neg", n_neg)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    rng = np.random.default_rng(rng)

    n_samples = labels.shape[0]
    codes = _encode_labels(labels)
    class_sizes = np.bincount(codes)
    if class_sizes.size <= np.iinfo(np.uint16).max:
        # Small integer keys let NumPy's stable sort use radix sort.
        codes = codes.astype(np.uint16)

    # Sort the examples by class: class c then occupies order[class_start[c]:class_start[c] + class_size[c]].
    order = np.argsort(codes, kind="stable")
    class_start = np.concatenate(([0], np.cumsum(class_sizes)[:-1]))
    position_in_order = np.empty(n_samples, dtype=np.int64)
    position_in_order[order] = np.arange(n_samples)

    anchor_size = class_sizes[codes]
    anchor_start = class_start[codes]
    firsts, seconds, flags = [], [], []

    # Positives: draw an offset among the other size - 1 members of the class, then step
    # over the anchor's own slot so that an example is never paired with itself.
    has_positive = np.flatnonzero(anchor_size >= 2)
    if n_pos > 0 and has_positive.size:
        anchors = np.repeat(has_positive, n_pos)
        offsets = _uniform_below(rng, anchor_size[anchors] - 1)
        own_offset = position_in_order[anchors] - anchor_start[anchors]
        offsets += offsets >= own_offset
        firsts.append(anchors)
        seconds.append(order[anchor_start[anchors] + offsets])
        flags.append(np.ones(anchors.size, dtype=bool))

    # Negatives: draw an offset among the n_samples - size examples outside the class, then
    # jump over the class's block in the sorted order.
    has_negative = np.flatnonzero(anchor_size < n_samples)
    if n_neg > 0 and has_negative.size:
        anchors = np.repeat(has_negative, n_neg)
        outside = n_samples - anchor_size[anchors]
        offsets = _uniform_below(rng, outside)
        offsets += np.where(offsets >= anchor_start[anchors], anchor_size[anchors], 0)
        firsts.append(anchors)
        seconds.append(order[offsets])
        flags.append(np.zeros(anchors.size, dtype=bool))

    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=bool)
    return (
        np.concatenate(firsts).astype(np.int64, copy=False),
        np.concatenate(seconds).astype(np.int64, copy=False),
        np.concatenate(flags),
    )


def _uniform_below(rng, bounds):
    """Draw one integer uniformly from [0, bound) for every bound, all bounds positive."""
    # Scaling uniform floats is several times faster than Generator.integers with an
    # array of bounds. The minimum guards against a float product rounding up to bound.
    draws = (rng.random(bounds.size) * bounds).astype(np.int64)
    return np.minimum(draws, bounds - 1)


def _encode_labels(labels):
    """Map labels to codes 0..n_classes-1 in sorted label order."""
    if labels.dtype.kind in "iub" and labels.size:
        low = int(labels.min())
        span = int(labels.max()) - low + 1
        if span <= 4 * labels.size + 1024:
            # Integer labels in a compact range: a bincount replaces the sort in np.unique.
            shifted = labels.astype(np.int64) - low
            code_of_value = np.cumsum(np.bincount(shifted, minlength=span) > 0) - 1
            return code_of_value[shifted]
    return np.unique(labels, return_inverse=True)[1].ravel()
