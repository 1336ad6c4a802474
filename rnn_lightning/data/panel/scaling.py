"""Per-series scaling statistics and MASE scales over ragged segments of one values array.

A global model sees series of very different levels (a few visitors and a few million); each is scaled by
its own (loc, scale), fit on its training part only, so no statistic has seen a validation or test
value. Every statistic here is vectorized over the series: segment sums by cumulative sums, order
statistics by one sort keyed by (series, value). They run over consecutive blocks of series of at most
``CHUNK_ROWS`` values each (:func:`series_chunks`), so their float64 and int64 work arrays are a block's
size, not the panel's: a panel of 10^6 series x 300 steps needs tens of MB for them, not gigabytes. A
panel within one block (every panel up to ``CHUNK_ROWS`` values) is computed exactly as in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np

from rnn_lightning.errors import UserInputError

ScalingMethod = Literal["standard", "robust", "minmax", "mean"]
SCALINGS: tuple[str, ...] = ("standard", "robust", "minmax", "mean")
# A scale at or below this fraction of the series' level (or of 1, for a series at zero) counts as zero.
SCALE_EPS = 1e-6
# Values per block of series the statistics are computed over at once (their work arrays: 32 MB each).
CHUNK_ROWS = 1 << 22


def series_chunks(begin: np.ndarray, end: np.ndarray, rows: int | None = None) -> Iterator[slice]:
    """Consecutive slices of the series whose segments hold at most ``rows`` values together.

    Every slice has at least one series, so a series longer than ``rows`` is a block of its own.
    ``rows`` None reads :data:`CHUNK_ROWS` when called.
    """
    rows = CHUNK_ROWS if rows is None else rows
    lengths = np.maximum(np.asarray(end, dtype=np.int64) - np.asarray(begin, dtype=np.int64), 0)
    total = np.cumsum(lengths)
    i, n = 0, len(lengths)
    while i < n:
        before = int(total[i - 1]) if i else 0
        j = max(int(np.searchsorted(total, before + rows, side="right")), i + 1)
        yield slice(i, j)
        i = j


def by_series_chunks(
    stat: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray,
    begin: np.ndarray,
    end: np.ndarray,
    rows: int | None = None,
) -> np.ndarray:
    """``stat(values, begin, end)`` (per series on its last axis) computed block of series by block.

    Each block sees the span of ``values`` its segments cover, with ``begin``/``end`` rebased to it.
    """
    begin, end = np.asarray(begin, dtype=np.int64), np.asarray(end, dtype=np.int64)
    parts = []
    for block in series_chunks(begin, end, rows):
        b, e = begin[block], end[block]
        low, high = int(b.min()), int(max(e.max(), b.max()))
        parts.append(stat(values[low:high], b - low, e - low))
    if not parts:
        return stat(values[:0], begin, end)
    return np.concatenate(parts, axis=-1)


def _segment_sums(x: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """float64 sums of ``x[begin[i]:end[i]]`` for every i (0 for an empty segment)."""
    cumulative = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    sums: np.ndarray = cumulative[end] - cumulative[begin]
    return sums


def _segment_ids(begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, segment of each position) of the concatenated segments."""
    lengths = end - begin
    firsts = np.cumsum(lengths) - lengths
    seg = np.repeat(np.arange(len(begin), dtype=np.int64), lengths)
    positions = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(firsts, lengths) + np.repeat(begin, lengths)
    return positions, seg


def segment_quantiles(values: np.ndarray, begin: np.ndarray, end: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """float64 (len(q), n_segments): each segment's quantiles, linearly interpolated as pandas and numpy do.

    Empty segments give NaN.
    """
    return by_series_chunks(lambda v, b, e: _block_quantiles(v, b, e, q), values, begin, end)


def _block_quantiles(values: np.ndarray, begin: np.ndarray, end: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """:func:`segment_quantiles` of one block of series, in one sort."""
    positions, seg = _segment_ids(begin, end)
    x = values[positions].astype(np.float64)
    order = np.lexsort((x, seg))
    sorted_x = x[order]
    lengths = end - begin
    firsts = np.cumsum(lengths) - lengths
    out = np.full((len(q), len(begin)), np.nan)
    has = lengths > 0
    for row, quantile in enumerate(q):
        exact = quantile * (lengths[has] - 1)
        low = np.floor(exact).astype(np.int64)
        high = np.minimum(low + 1, lengths[has] - 1)
        frac = exact - low
        lo_value, hi_value = sorted_x[firsts[has] + low], sorted_x[firsts[has] + high]
        out[row, has] = lo_value + frac * (hi_value - lo_value)
    return out


def fit_scaling(
    values: np.ndarray, begin: np.ndarray, end: np.ndarray, method: ScalingMethod = "standard"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series (loc, scale), float32 (n_series,), over the segments ``values[begin[i]:end[i]]``.

    A window is scaled as ``(y - loc) / scale``. Methods:

    * ``standard``: mean and standard deviation (population, ddof=0);
    * ``robust``: median and interquartile range (q75 - q25), for series with outliers;
    * ``minmax``: minimum and range (max - min), mapping the training part onto [0, 1];
    * ``mean``: loc 0 and the mean absolute value, as DeepAR and ES-RNN scale (keeps the sign and zero).

    Scale floor: a scale at or below ``SCALE_EPS`` times the series' mean absolute value (a constant
    series, zero spread) is replaced by that mean absolute value, or 1 for a series of zeros; so a
    constant series maps to 0 and later changes read as fractions of its level, never divided by ~0.
    An empty segment (a series left out) gives loc 0 and scale 1.

    Args:
        values: The one values array (float32).
        begin: int64 (n_series,) first position of each series' fitting part.
        end: int64 (n_series,) position after its last.
        method: One of :data:`SCALINGS`.
    """
    if method not in SCALINGS:
        raise UserInputError(f"unknown scaling {method!r}; choose one of {', '.join(SCALINGS)}")
    begin, end = np.asarray(begin, dtype=np.int64), np.asarray(end, dtype=np.int64)
    lengths = (end - begin).astype(np.float64)
    count = np.maximum(lengths, 1.0)
    absolute = by_series_chunks(lambda v, b, e: _segment_sums(np.abs(v), b, e), values, begin, end) / count
    if method == "standard":
        loc, scale = by_series_chunks(_block_moments, values, begin, end)
    elif method == "robust":
        q25, q50, q75 = segment_quantiles(values, begin, end, (0.25, 0.5, 0.75))
        loc, scale = q50, q75 - q25
    elif method == "minmax":
        low, high = segment_quantiles(values, begin, end, (0.0, 1.0))
        loc, scale = low, high - low
    else:
        loc, scale = np.zeros(len(begin)), absolute.copy()
    level = np.where(absolute > 0, absolute, 1.0)
    scale = np.where(scale > SCALE_EPS * level, scale, level)
    empty = lengths == 0
    loc = np.where(empty, 0.0, loc)
    scale = np.where(empty, 1.0, scale)
    return loc.astype(np.float32), scale.astype(np.float32)


def _block_moments(values: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """float64 (2, n): each segment's mean and population standard deviation, of one block of series."""
    count = np.maximum(end - begin, 1).astype(np.float64)
    loc = _segment_sums(values, begin, end) / count
    # Squared deviations around loc (a second pass): E[y^2] - E[y]^2 cancels badly for a high level
    # with a small spread.
    positions, seg = _segment_ids(begin, end)
    deviation = values[positions].astype(np.float64) - loc[seg]
    scale = np.sqrt(np.bincount(seg, weights=deviation**2, minlength=len(begin)) / count)
    return np.stack([loc, scale])


def mase_scale(
    values: np.ndarray, begin: np.ndarray, end: np.ndarray, season_length: int, ids: Sequence[str]
) -> np.ndarray:
    """float32 (n_series,): each series' mean ``|y_t - y_{t-m}|`` over ``values[begin[i]:end[i]]``.

    The MASE denominator: the in-sample error of the seasonal naive forecast with season ``m``
    (m = 1: the naive forecast). It is not floored: a series without change over its part gives 0,
    which a metric must handle.

    Raises:
        UserInputError: A season length at least as long as some series' part (no seasonal difference),
            naming the series.
    """
    if isinstance(season_length, bool) or not isinstance(season_length, int) or season_length < 1:
        raise UserInputError(f"season_length must be a positive integer, got {season_length!r}")
    begin, end = np.asarray(begin, dtype=np.int64), np.asarray(end, dtype=np.int64)
    pairs = end - begin - season_length
    if (pairs < 1).any():
        i = int(np.argmax(pairs < 1))
        raise UserInputError(
            f"series {ids[i]!r}: season length {season_length} is longer than its training part "
            f"({int(end[i] - begin[i])} steps); a seasonal difference needs more than {season_length} steps"
        )
    sums = by_series_chunks(lambda v, b, e: _seasonal_diff_sums(v, b, e, season_length), values, begin, end)
    scales: np.ndarray = (sums / pairs).astype(np.float32)
    return scales


def _seasonal_diff_sums(values: np.ndarray, begin: np.ndarray, end: np.ndarray, season_length: int) -> np.ndarray:
    """float64 (n,): each segment's sum of ``|y_t - y_{t-m}|`` over its t >= begin + m, of one block."""
    x = values.astype(np.float64)
    diffs = np.zeros(len(x))
    diffs[season_length:] = np.abs(x[season_length:] - x[:-season_length])  # diffs[t] = |y_t - y_{t-m}|
    return _segment_sums(diffs, begin + season_length, end)


def pooled_moments(
    columns: np.ndarray, begin: np.ndarray, end: np.ndarray, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """float64 (n_columns,) mean and population standard deviation of ``columns`` over all the segments' rows.

    Pooled over every segment (one statistic per column, not per series): what the model standardises
    past covariates by. Two passes over blocks of series (sums, then squared deviations), so the work
    arrays are a block's rows; one block computes what ``x.mean(0)`` and ``x.std(0)`` give.
    """
    begin, end = np.asarray(begin, dtype=np.int64), np.asarray(end, dtype=np.int64)
    sums, squares, count = np.zeros(columns.shape[1]), np.zeros(columns.shape[1]), 0
    for block in series_chunks(begin, end, rows):
        positions, _ = _segment_ids(begin[block], end[block])
        sums += np.add.reduce(columns[positions].astype(np.float64), axis=0)
        count += len(positions)
    mean = sums / max(count, 1)
    for block in series_chunks(begin, end, rows):  # around the mean: E[x^2] - E[x]^2 cancels badly
        positions, _ = _segment_ids(begin[block], end[block])
        squares += np.add.reduce((columns[positions].astype(np.float64) - mean) ** 2, axis=0)
    return mean, np.sqrt(squares / max(count, 1))
