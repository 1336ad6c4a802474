"""Batches of panel windows, gathered by fancy indexing into the one values array.

:func:`gather_windows` builds a :class:`PanelWindows` from any rows of a
:class:`~rnn_lightning.data.panel.windows.WindowIndex` with a handful of vectorized gathers, whatever
the batch size: the (B, L) positions of the inputs and (B, H) of the targets are an outer sum of the
origins and a range. :class:`PanelBatches` iterates over a split epoch by epoch, with the window cap,
the shuffle and the DDP sharding of :class:`~rnn_lightning.data.batches.InMemoryBatches`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnn_lightning.data.panel.sampling import sample_rows
from rnn_lightning.data.panel.windows import PanelSplits, SplitName, WindowIndex
from rnn_lightning.errors import UserInputError, check_positive


class PanelWindows(NamedTuple):
    """A batch of B panel windows, in the data's units (unscaled: the model applies per-series scaling).

    Fields:
        series: int64 (B,), each window's series (a row of the panel's ``ids``, ``static``, scaling).
        x: float32 (B, L, 1 + n_past), the inputs: the target, then the past covariates. Steps before a
            series' start are zeros (left padding).
        mask: bool (B, L), True at the real input steps, False at the padding.
        y: float32 (B, H), the targets.
        origin: int64 (B,), position of the first target in the layout arrays: the targets' timestamps
            are ``layout.timestamps[origin[:, None] + arange(H)]``.
        step: int64 (B,), the first target's step within its series (0 = the series' first value).
        static: float32 (B, n_static), the series' static covariates ((B, 0) without them).
        calendar_x: int64 (B, L, n_calendar), the inputs' calendar features (0 at the padding).
        calendar_y: int64 (B, H, n_calendar), the targets' calendar features: integers from 0 (see
            :mod:`rnn_lightning.data.panel.calendar`; ``cyclic_encoding`` gives sin/cos instead).
        ref: float32 (B,), the last input value: the naive forecast of every target step (what the
            regression heads call ``ref``, the persistence forecast they score beside the model).
        snaive: float32 (B, H), the seasonal naive forecast of each target step,
            ``y[t + h - m * ceil(h / m)]`` with ``m`` the season length (the last value for m = 1).
        mase_scale: float32 (B,), the series' MASE denominator (its in-sample seasonal naive error);
            NaN where the batches were built without one.

    ``close`` is ``y`` under the name the regression heads read.
    """

    series: Tensor
    x: Tensor
    mask: Tensor
    y: Tensor
    origin: Tensor
    step: Tensor
    static: Tensor
    calendar_x: Tensor
    calendar_y: Tensor
    ref: Tensor
    snaive: Tensor
    mase_scale: Tensor

    @property
    def close(self) -> Tensor:
        """The targets (B, H), as the regression heads name them."""
        return self.y


def seasonal_positions(origin: np.ndarray, first: np.ndarray, horizon: int, season_length: int) -> np.ndarray:
    """int64 (B, H): where each target step's seasonal naive value lies, ``origin + k - m * (k // m + 1)``.

    ``k`` is the step (0-based) and ``m`` the season length; a position before a series' first value
    (a series shorter than a season) falls back to that first value.
    """
    steps = np.arange(horizon, dtype=np.int64)
    back = season_length * (steps // season_length + 1)  # (H,)
    positions = origin[:, None] + steps - back  # (B, H)
    clipped: np.ndarray = np.maximum(positions, first[:, None])
    return clipped


def gather_windows(
    splits: PanelSplits,
    index: WindowIndex,
    rows: np.ndarray | Tensor,
    season_length: int = 1,
    mase_scale: np.ndarray | None = None,
) -> PanelWindows:
    """The windows ``rows`` of ``index`` as one :class:`PanelWindows` (no Python loop over windows).

    Args:
        splits: The split panel.
        index: The windows (a split's :class:`WindowIndex`, or any other over the same layout).
        rows: Which windows of ``index``.
        season_length: ``m`` of the seasonal naive forecast (``snaive``).
        mase_scale: float32 (n_series,) MASE denominators to attach per window; None: NaN.
    """
    rows = rows.numpy() if isinstance(rows, Tensor) else np.asarray(rows)
    layout = splits.layout
    series, origin = index.locate(rows)
    first = layout.offsets[series]
    L, H = index.input_length, index.horizon
    inputs = origin[:, None] + np.arange(-L, 0, dtype=np.int64)  # (B, L)
    mask = inputs >= first[:, None]
    inputs = np.where(mask, inputs, first[:, None])  # padding reads the first value, then zeroed
    targets = origin[:, None] + np.arange(H, dtype=np.int64)  # (B, H)

    target_x = np.where(mask, layout.values[inputs], np.float32(0))[..., None]
    if layout.past is not None:
        past = np.where(mask[..., None], layout.past[inputs], np.float32(0))
        x = np.concatenate([target_x, past], axis=-1)
    else:
        x = target_x
    n_static = 0 if layout.static is None else layout.static.shape[1]
    static = layout.static[series] if layout.static is not None else np.zeros((len(rows), n_static), np.float32)
    timeline = layout.timestamps
    calendar_x = np.where(mask[..., None], timeline.calendar(inputs, series), 0).astype(np.int64)
    values = layout.values
    scale = np.full(len(rows), np.nan, np.float32) if mase_scale is None else mase_scale[series].astype(np.float32)
    return PanelWindows(
        series=torch.from_numpy(series),
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        mask=torch.from_numpy(mask),
        y=torch.from_numpy(layout.values[targets]),
        origin=torch.from_numpy(origin),
        step=torch.from_numpy(origin - first),
        static=torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32)),
        calendar_x=torch.from_numpy(calendar_x),
        calendar_y=torch.from_numpy(timeline.calendar(targets, series).astype(np.int64)),
        ref=torch.from_numpy(values[origin - 1]),
        snaive=torch.from_numpy(values[seasonal_positions(origin, first, H, season_length)]),
        mase_scale=torch.from_numpy(scale),
    )


class PanelBatches:
    """Iterate over one split's windows in batches: capped per series, optionally shuffled, rank-aware.

    Every epoch draws its windows afresh (:meth:`WindowIndex.sample`, by :func:`sample_rows`; at most
    ``max_windows_per_series`` per series) and, when shuffling, a permutation of them, both seeded by
    ``seed`` and the epoch, so every DDP rank draws the same and takes a disjoint interleaved shard;
    every rank yields the same number of batches (as :class:`~rnn_lightning.data.batches.InMemoryBatches`).

    Args:
        splits: The split panel.
        split: ``train``, ``val`` or ``test``.
        batch_size: Windows per batch on each rank.
        shuffle: Shuffle the windows every epoch.
        max_windows_per_series: At most this many windows of each series per epoch; None: all.
        seed: Base seed of the draws; identical on every rank.
        rank: This process's rank among ``world_size``.
        world_size: Number of ranks that share the data.
        epoch_fn: Returns the current epoch (e.g. the Trainer's); without it each pass is a new epoch.
        season_length: ``m`` of each batch's seasonal naive forecast (:func:`gather_windows`).
        mase_scale: float32 (n_series,) MASE denominators each batch carries; None: NaN.
    """

    def __init__(
        self,
        splits: PanelSplits,
        split: SplitName = "train",
        batch_size: int = 32,
        shuffle: bool = False,
        max_windows_per_series: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] | None = None,
        season_length: int = 1,
        mase_scale: np.ndarray | None = None,
    ) -> None:
        check_positive("batch_size", batch_size)
        if max_windows_per_series is not None:
            check_positive("max_windows_per_series", max_windows_per_series)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.splits = splits
        self.index = splits.windows(split)
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_windows_per_series = max_windows_per_series
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_fn = epoch_fn
        self.season_length = season_length
        self.mase_scale = mase_scale
        self._passes = 0
        counts = self.index.counts(splits.n_series)
        cap = counts if max_windows_per_series is None else np.minimum(counts, max_windows_per_series)
        self.num_samples = int(cap.sum())  # the same every epoch: only which windows changes
        if self.num_samples < world_size:
            raise UserInputError(
                f"the {split} split has {self.num_samples} windows, fewer than the {world_size} devices"
            )

    @property
    def epoch(self) -> int:
        return self.epoch_fn() if self.epoch_fn is not None else self._passes

    def __len__(self) -> int:
        return max(1, math.ceil((self.num_samples // self.world_size) / self.batch_size))

    def epoch_rows(self) -> np.ndarray:
        """The window rows this rank gathers in the current epoch, in the order it gathers them."""
        rows = sample_rows(self.index, self.max_windows_per_series, self.seed, self.epoch)
        if self.shuffle:
            rows = np.random.default_rng([self.seed, self.epoch, 1]).permutation(rows)
        return rows[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[PanelWindows]:
        rows = self.epoch_rows()
        bounds = [i * self.batch_size for i in range(len(self))] + [len(rows)]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            yield gather_windows(self.splits, self.index, rows[start:stop], self.season_length, self.mase_scale)
        self._passes += 1
