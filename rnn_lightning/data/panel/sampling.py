"""The per-epoch draw of at most ``k`` windows per series, in time linear in the windows for a small ``k``.

:meth:`~rnn_lightning.data.panel.windows.WindowIndex.sample` keeps, in each series, the windows with the
``k`` smallest of one uniform key per window: a ``np.lexsort`` of every window, every epoch. That is
fine for Tourism (10^5 windows) and most of an epoch for 10^5 series x 300 steps (2 x 10^7 windows:
a lexsort of about 25 s on a loaded 2-core machine, more than the epoch's training steps). For a
small cap, :func:`sample_rows` picks the same windows by ``k`` passes of a per-series minimum
(``np.minimum.reduceat``) over the same keys; ties go to the earlier window, as the stable lexsort's.
Both draw and work block of series by block, so their work arrays are a block's, not the panel's.
"""

from __future__ import annotations

import numpy as np

from rnn_lightning.data.panel.windows import WindowIndex
from rnn_lightning.errors import check_positive

# Caps up to this many windows per series use the minimum passes; larger ones WindowIndex.sample.
MAX_PASSES = 8


def sample_rows(index: WindowIndex, max_per_series: int | None, seed: int = 0, epoch: int = 0) -> np.ndarray:
    """``index.sample(max_per_series, seed, epoch)``, the same rows (ascending), without a sort for a small cap.

    Block of series by block, on the sample's keys (:meth:`WindowIndex.keyed_blocks`).
    """
    if max_per_series is None or max_per_series > MAX_PASSES or not len(index):
        return index.sample(max_per_series, seed, epoch)
    check_positive("max_windows_per_series", max_per_series)
    parts = [np.zeros(0, dtype=np.int64)]
    for a, keys, counts in index.keyed_blocks(seed, epoch):
        parts.append(a + _lowest(keys, counts, max_per_series))
    return np.concatenate(parts)


def _lowest(keys: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Rows (ascending) of the ``k`` smallest ``keys`` of each series (``counts`` consecutive rows each)."""
    big = counts > k  # the series that lose windows; the others keep all of theirs
    in_big = np.repeat(big, counts)
    keep = ~in_big
    if not big.any():
        return np.flatnonzero(keep)
    if big.all():  # every series loses windows (the usual case): no copy of the keys
        rows, left = None, keys
    else:
        rows = np.flatnonzero(in_big)  # grouped by series
        left = keys[rows]
    sizes = counts[big]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for _ in range(k):
        lowest = np.minimum.reduceat(left, starts)
        at = np.flatnonzero(left == np.repeat(lowest, sizes))
        segment = np.searchsorted(starts, at, side="right")
        first = at[np.concatenate([[True], segment[1:] != segment[:-1]])]  # the earliest of ties
        keep[first if rows is None else rows[first]] = True
        left[first] = np.inf
    return np.flatnonzero(keep)
