"""Windows over a panel as (series, origin) integer pairs, and each series' train / validation / test split.

A window is never materialized: it is the series it belongs to and its *origin*, the position (into the
one values array of :class:`PanelLayout`) of its first target step. Its input is the ``input_length``
(L) steps before the origin, its targets the ``horizon`` (H) steps from it. Batches gather those by
fancy indexing (:mod:`rnn_lightning.data.panel.batches`).

The split, per series: test = its last H steps, or the test part the data set ships (then as many
consecutive blocks of H as it holds); validation = the H steps before the test; train = the rest. A
training window's targets lie entirely in train; a validation or test window's input may use all the
history before its targets (validation targets included, for a test window), as a forecast made then
could.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rnn_lightning.data.panel.calendar import Calendar
from rnn_lightning.data.panel.core import Panel, check_horizon, ragged_arange
from rnn_lightning.data.panel.scaling import SCALINGS, fit_scaling, mase_scale, series_chunks
from rnn_lightning.data.panel.timeline import Timeline
from rnn_lightning.errors import UserInputError, check_choice, check_positive

SplitName = Literal["train", "val", "test"]
# How many ids the short-series warning names before it only counts the rest.
WARN_NAMES = 20


@dataclass(frozen=True)
class PanelLayout:
    """The arrays windows index into: every series' whole history, its training part then its test part.

    Without a separate test part these are the panel's own arrays (no copy). ``timestamps`` gives each
    position's timestamp and calendar features (the panel's own per row, or the regular calendar from
    its starts on one shared grid: :class:`~rnn_lightning.data.panel.timeline.Timeline`).
    """

    ids: list[str]
    values: np.ndarray  # float32 (T,)
    offsets: np.ndarray  # int64 (n_series + 1,)
    past: np.ndarray | None  # float32 (T, n_past)
    static: np.ndarray | None  # float32 (n_series, n_static)
    timestamps: Timeline  # datetime64[ns] per position: timestamps[positions]
    freq: str
    shipped_test: np.ndarray | None  # int64 (n_series,): where each shipped test part begins, or None


def panel_layout(panel: Panel) -> PanelLayout:
    """One array of each series' training part followed by its test part (when the data set ships one)."""
    lengths = panel.lengths
    if panel.test_values is None or panel.test_offsets is None:
        values, offsets, shipped = panel.values, panel.offsets, None
    else:
        test_lengths = panel.test_lengths
        offsets = panel.offsets + panel.test_offsets
        values = np.empty(len(panel.values) + len(panel.test_values), dtype=np.float32)
        values[ragged_arange(lengths) + np.repeat(offsets[:-1], lengths)] = panel.values
        shipped = offsets[:-1] + lengths
        values[ragged_arange(test_lengths) + np.repeat(shipped, test_lengths)] = panel.test_values
    timestamps = Timeline(offsets, panel.starts, panel.freq, panel.timestamps)
    return PanelLayout(
        ids=panel.ids,
        values=values,
        offsets=offsets,
        past=panel.past,
        static=panel.static,
        timestamps=timestamps,
        freq=panel.freq,
        shipped_test=shipped,
    )


@dataclass(frozen=True, eq=False)
class WindowIndex:
    """A split's windows as one run of origins per series: memory per series, not per window.

    Series ``i`` has ``count[i]`` windows with origins ``first[i] + k * step``, ``k < count[i]``. Rows
    ``0..len - 1`` number the windows series after series (ascending), origins ascending within one;
    :meth:`locate` turns any rows into (series, origin). The per-window arrays :attr:`series` and
    :attr:`origin` (16 bytes a window: 3.2 GB for the 2 x 10^8 training windows of 10^6 series x 300
    steps) are built only when read, for the small validation and test splits and for tests.

    Attributes:
        first: int64 (n_series,): each series' first origin (a position in :attr:`PanelLayout.values`).
        count: int64 (n_series,): its number of windows (0 for a series without any).
        step: Positions between consecutive origins of one series (1 for training, H for test blocks).
        input_length: L, the input steps before the origin (fewer near a series' start: padded).
        horizon: H, the target steps from the origin.
    """

    first: np.ndarray
    count: np.ndarray
    step: int
    input_length: int
    horizon: int
    ends: np.ndarray = field(init=False, repr=False)  # int64 (n_series,): cumulative counts

    def __post_init__(self) -> None:
        object.__setattr__(self, "first", np.asarray(self.first, dtype=np.int64))
        object.__setattr__(self, "count", np.maximum(np.asarray(self.count, dtype=np.int64), 0))
        object.__setattr__(self, "ends", np.cumsum(self.count))

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def counts(self, n_series: int) -> np.ndarray:
        """int64 (n_series,): windows per series."""
        out = np.zeros(n_series, dtype=np.int64)
        out[: len(self.count)] = self.count
        return out

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(series, origin), int64, of the windows ``rows`` (any shape, any order)."""
        rows = np.asarray(rows, dtype=np.int64)
        series = np.searchsorted(self.ends, rows, side="right")
        origin = self.first[series] + self.step * (rows - (self.ends[series] - self.count[series]))
        return series, origin

    @functools.cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return _ragged_windows(np.arange(len(self.count), dtype=np.int64), self.first, self.count, self.step)

    @property
    def series(self) -> np.ndarray:
        """int64 (W,): every window's series (built on first use)."""
        return self._pairs[0]

    @property
    def origin(self) -> np.ndarray:
        """int64 (W,): every window's origin (built on first use)."""
        return self._pairs[1]

    def keyed_blocks(self, seed: int, epoch: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, keys, counts) of consecutive blocks of series: every window's uniform key for the epoch.

        The keys come from one generator seeded by ``(seed, epoch)``, drawn a block at a time: the same
        keys as one draw of every window, since the generator's stream is the same in pieces. A block
        holds at most :data:`~rnn_lightning.data.panel.scaling.CHUNK_ROWS` windows (a series with more
        is a block of its own); ``counts`` are its series' windows.
        """
        generator = np.random.default_rng([seed, epoch])
        for block in series_chunks(self.ends - self.count, self.ends):
            a = int(self.ends[block.start] - self.count[block.start])
            yield a, generator.random(int(self.ends[block.stop - 1]) - a), self.count[block]

    def sample(self, max_per_series: int | None, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """Rows of this index for one epoch: at most ``max_per_series`` windows of each series, ascending.

        Each window gets a uniform key and each series keeps its windows with the ``max_per_series``
        smallest (ties: the earlier window). The draw is fresh every epoch and reproducible: the keys
        come from a generator seeded by ``(seed, epoch)``, so every DDP rank draws the same set, and are
        sorted block of series by block (:meth:`keyed_blocks`). None keeps every window.
        """
        if max_per_series is None:
            return np.arange(len(self), dtype=np.int64)
        check_positive("max_windows_per_series", max_per_series)
        parts = [np.zeros(0, dtype=np.int64)]
        for a, keys, counts in self.keyed_blocks(seed, epoch):
            local = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            order = np.lexsort((keys, local))  # by series, randomly within one
            rank = ragged_arange(counts)  # each sorted row's place within its series
            parts.append(a + np.sort(order[rank < max_per_series]))
        return np.concatenate(parts)


def _ragged_windows(
    series: np.ndarray, first: np.ndarray, count: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """(series, origin) pairs: ``count[i]`` origins ``first[i] + k * step`` for each ``series[i]``."""
    count = np.maximum(count, 0)
    # origin = first[s] + step * (k - before[s]) for the k-th pair overall, before[s] the pairs ahead of
    # series s: one int64 array and one temporary, not ragged_arange's four (gigabytes at 10^8 windows).
    before = np.cumsum(count) - count
    origin = np.repeat(first - step * before, count)
    origin += step * np.arange(len(origin), dtype=np.int64) if step != 1 else np.arange(len(origin), dtype=np.int64)
    return np.repeat(series, count), origin


@dataclass(eq=False)
class PanelSplits:
    """A panel's windows split in time per series, with the boundaries they came from.

    Boundaries are int64 (n_series,) positions into ``layout.values``: a series spans
    ``[start, end)``, its training part ``[start, val_begin)``, validation ``[val_begin, test_begin)``
    and test ``[test_begin, end)``. ``usable`` marks the series that have windows; ``short_ids`` the
    usable ones too short for a full training window (their windows are left-padded), ``dropped_ids``
    the series left out.
    """

    layout: PanelLayout
    input_length: int
    horizon: int
    start: np.ndarray
    val_begin: np.ndarray
    test_begin: np.ndarray
    end: np.ndarray
    usable: np.ndarray
    train: WindowIndex
    val: WindowIndex
    test: WindowIndex
    short_ids: list[str]
    dropped_ids: list[str]

    @property
    def n_series(self) -> int:
        return len(self.layout.ids)

    def windows(self, split: SplitName) -> WindowIndex:
        """The :class:`WindowIndex` of ``train``, ``val`` or ``test``."""
        check_choice("split", split, ("train", "val", "test"))
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def part(self, name: Literal["train", "history", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """(begin, end) of each series' ``train`` part, its ``history`` (all before the test) or ``test``."""
        check_choice("part", name, ("train", "history", "test"))
        if name == "train":
            return self.start, self.val_begin
        if name == "history":
            return self.start, self.test_begin
        return self.test_begin, self.end

    def scaling(self, method: str = "standard") -> tuple[np.ndarray, np.ndarray]:
        """Per-series (loc, scale), float32 (n_series,), fit on each series' training part only.

        See :func:`~rnn_lightning.data.panel.scaling.fit_scaling` for the methods (``SCALINGS``).
        """
        check_choice("scaling", method, SCALINGS)
        begin, end = self.part("train")
        return fit_scaling(self.layout.values, begin, end, method)  # type: ignore[arg-type]

    def mase_scale(self, season_length: int, part: Literal["train", "history"] = "history") -> np.ndarray:
        """Per-series MASE denominator over the usable series' ``part`` (NaN for series left out).

        ``history`` (all before the test) is the competitions' definition: the test check on Tourism
        uses it. See :func:`~rnn_lightning.data.panel.scaling.mase_scale`.
        """
        begin, end = self.part(part)
        out = np.full(self.n_series, np.nan, dtype=np.float32)
        keep = np.flatnonzero(self.usable)
        ids = [self.layout.ids[i] for i in keep]
        out[keep] = mase_scale(self.layout.values, begin[keep], end[keep], season_length, ids)
        return out

    @functools.cached_property
    def calendar(self) -> Calendar:
        """Calendar features of every position of ``layout`` (month of year, day of week...), materialized.

        For small panels and tests; batches read the features of their own positions from
        ``layout.timestamps.calendar`` instead.
        """
        return self.layout.timestamps.every_calendar()


def split_panel(
    panel: Panel,
    input_length: int,
    horizon: int,
    validation: bool = True,
    min_history: int | None = None,
) -> PanelSplits:
    """Split every series of ``panel`` in time and index its train, validation and test windows.

    Args:
        panel: The panel.
        input_length: L, input steps per window.
        horizon: H, target steps per window (and the length of the validation and default test parts).
        validation: Hold out the H steps before the test for validation; False trains on them too.
        min_history: The fewest observed input steps a training window needs. None: L (full windows
            only), except for a series too short for any full training window, which gives its one
            window with all its training history (left-padded). An int (1..L) allows padded training
            windows in every series.

    A series too short for a full input window is still forecast from the history it has: its windows
    are left-padded with zeros and the batch's ``mask`` marks the real steps. A series with no usable
    history (fewer than H + 1 steps, or no training step) is left out. One warning line counts the
    padded series and names those left out.

    Raises:
        UserInputError: A horizon longer than every series, no series with a training step, or a
            shipped test part shorter than the horizon.
    """
    check_positive("input_length", input_length)
    check_positive("horizon", horizon)
    if min_history is not None:
        check_positive("min_history", min_history)
    check_horizon(panel, horizon)
    layout = panel_layout(panel)
    L, H = input_length, horizon
    start, end = layout.offsets[:-1], layout.offsets[1:]
    if layout.shipped_test is not None:
        test_begin = layout.shipped_test
        short_test = np.flatnonzero(end - test_begin < H)
        if len(short_test):
            i = int(short_test[0])
            raise UserInputError(
                f"{panel.source}: series {panel.ids[i]!r}: its test part has {int(end[i] - test_begin[i])} "
                f"steps, fewer than the horizon {H}"
            )
    else:
        test_begin = end - H
    val_begin = test_begin - H if validation else test_begin
    train_len = val_begin - start
    usable = (end - start >= H + 1) & (train_len >= 1)
    if not usable.any():
        raise UserInputError(
            f"{panel.source}: no series has a training step before its "
            f"{'validation and ' if validation else ''}test parts of {H} steps each (longest series: "
            f"{int((end - start).max())} steps)"
        )

    max_history = train_len - H  # the most input steps a training window can have
    if min_history is None:
        need = np.clip(np.minimum(L, max_history), 1, None)
    else:
        need = np.full(len(start), min(min_history, L), dtype=np.int64)
    first, last = start + need, val_begin - H
    count = np.where(usable, last - first + 1, 0)
    train = WindowIndex(first, count, 1, L, H)
    val_count = np.where(usable, 1, 0) if validation else np.zeros(len(start), dtype=np.int64)
    val = WindowIndex(val_begin, val_count, H, L, H)
    test = WindowIndex(test_begin, np.where(usable, (end - test_begin) // H, 0), H, L, H)

    short_ids = [panel.ids[i] for i in np.flatnonzero(usable & (train_len < L + H))]
    dropped_ids = [panel.ids[i] for i in np.flatnonzero(~usable)]
    if short_ids or dropped_ids:
        message = (
            f"{panel.source}: {len(short_ids)} of {panel.n_series} series are shorter than a full training "
            f"window (L + H = {L + H} steps), their windows are left-padded with zeros (see the batch mask); "
            f"{len(dropped_ids)} left out, no usable history"
        )
        if dropped_ids:
            named = ", ".join(dropped_ids[:WARN_NAMES])
            more = f" and {len(dropped_ids) - WARN_NAMES} more" if len(dropped_ids) > WARN_NAMES else ""
            message += f": {named}{more}"
        warnings.warn(message, stacklevel=2)
    return PanelSplits(
        layout=layout,
        input_length=L,
        horizon=H,
        start=start,
        val_begin=val_begin,
        test_begin=test_begin,
        end=end,
        usable=usable,
        train=train,
        val=val,
        test=test,
        short_ids=short_ids,
        dropped_ids=dropped_ids,
    )
