"""Each position's timestamp and calendar features, from one shared calendar grid instead of one per row.

A panel on a regular calendar (every series ``starts[i] + k * freq``) needs no timestamp per row: when
every start lies on one grid of ``freq`` steps, position ``p`` of series ``s`` is grid step
``start_step[s] + p - offsets[s]``. :class:`Timeline` keeps that grid (as long as the panel's calendar
span, not its row count: 300 steps for 10^6 daily series that start together), each series' step on
it, and the calendar features of the grid alone. A panel of 10^6 series x 300 steps would otherwise
hold 2.4 GB of datetime64 timestamps and 1.2 GB of int16 calendar features in memory for every run.

A panel whose steps are rows of an irregular calendar (a Yahoo series' trading days) keeps its own
timestamps per row (memory-mapped from the panel cache), and its calendar is computed from them once.
So is a regular panel whose starts do not share one grid, or whose grid would be longer than its rows.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from rnn_lightning.data.panel.calendar import Calendar, calendar_features
from rnn_lightning.data.panel.core import regular_timestamps


class Timeline:
    """Timestamps and calendar features of the positions ``0..T-1`` of a panel layout.

    Args:
        offsets: int64 (n_series + 1,): series ``i`` spans positions ``[offsets[i], offsets[i + 1])``.
        starts: datetime64 (n_series,): each series' first timestamp (for a regular calendar).
        freq: The steps' pandas offset alias.
        timestamps: datetime64[ns] (T,), each row's own timestamp; None for the regular calendar.

    Index it like the array of every position's timestamp (``timeline[positions]``, a slice, or
    ``np.asarray(timeline)`` for all of them); :meth:`calendar` gives the features of any positions.
    """

    def __init__(self, offsets: np.ndarray, starts: np.ndarray, freq: str, timestamps: np.ndarray | None = None):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.freq = freq
        self._rows = timestamps
        self.grid: np.ndarray | None = None  # datetime64[ns] (G,): the shared grid, when there is one
        self.start_step: np.ndarray | None = None  # int64 (n_series,): each series' first step on it
        if timestamps is None:
            self._regular(np.asarray(starts).astype("datetime64[ns]"))

    def _regular(self, starts: np.ndarray) -> None:
        lengths = np.diff(self.offsets)
        total = int(self.offsets[-1])
        if len(starts) == 0 or total == 0:
            self._rows = np.empty(total, dtype="datetime64[ns]")
            return
        low, high = pd.Timestamp(starts.min()), pd.Timestamp(starts.max())
        first_step = (low + to_offset(self.freq)) - low  # about one step: bounds the grid before building it
        if first_step <= pd.Timedelta(0) or (high - low) / first_step > total:
            self._rows = regular_timestamps(starts, lengths, self.freq)
            return
        span = pd.date_range(low, high, freq=self.freq).to_numpy().astype("datetime64[ns]")
        if len(span) <= total and len(span) and span[0] == low:
            step = np.searchsorted(span, starts)
            on_grid = step < len(span)
            on_grid[on_grid] = span[step[on_grid]] == starts[on_grid]
            steps = int((step + lengths).max())
            if on_grid.all() and steps <= total:
                grid = pd.date_range(low, periods=steps, freq=self.freq)
                self.grid = grid.to_numpy().astype("datetime64[ns]")
                self.start_step = step.astype(np.int64)
                return
        self._rows = regular_timestamps(starts, lengths, self.freq)  # no shared grid: one per row

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _grid_steps(self, positions: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        assert self.start_step is not None
        if series is None:
            series = np.searchsorted(self.offsets, positions, side="right") - 1
        else:  # one series per leading row of positions
            series = np.asarray(series, dtype=np.int64)
            series = series.reshape(series.shape + (1,) * (positions.ndim - series.ndim))
        steps: np.ndarray = self.start_step[series] + (positions - self.offsets[series])
        return steps

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.grid is None:
            assert self._rows is not None
            rows: np.ndarray = self._rows[key]
            return rows
        if isinstance(key, slice):  # the slice's positions alone (range slicing), not an arange of all
            part = range(len(self))[key]
            key = np.arange(part.start, part.stop, part.step, dtype=np.int64)
        positions = np.asarray(key, dtype=np.int64)
        stamps: np.ndarray = self.grid[self._grid_steps(positions)]
        return stamps

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        every = self[slice(None)]
        return every if dtype is None else every.astype(dtype)

    @functools.cached_property
    def _features(self) -> Calendar:
        """The calendar features of the grid's steps, or of every row without a grid."""
        return calendar_features(self.grid if self.grid is not None else self._rows, self.freq)  # type: ignore[arg-type]

    def calendar(self, positions: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        """int16 (*positions.shape, n_features): the calendar features of ``positions``.

        ``series`` (the leading dimensions of ``positions``: one series per row) saves the lookup of
        each position's series on a grid; every position must then lie in its row's series.
        """
        positions = np.asarray(positions, dtype=np.int64)
        if self.grid is None:
            values: np.ndarray = self._features.values[positions]
            return values
        grid_values: np.ndarray = self._features.values[self._grid_steps(positions, series)]
        return grid_values

    def every_calendar(self) -> Calendar:
        """The :class:`Calendar` of every position (materialized: for small panels and tests)."""
        features = self._features
        if self.grid is None:
            return features
        return Calendar(features.names, features.periods, self.calendar(np.arange(len(self), dtype=np.int64)))
