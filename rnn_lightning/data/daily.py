"""Windowed daily prices from a Yahoo-Finance CSV: read, validate, split in time, fit the scaling on train rows.

A window is ``sequence_length`` consecutive rows of features; its target is the next row's close, or the
next ``horizon`` (H) rows' closes. With ``N`` rows there are ``N - sequence_length - (H - 1)`` windows,
split chronologically into train, validation (the end of the training part) and test (everything after
``split``). For H > 1 the last H - 1 training windows are left out (a gap): their targets reach into the
days the validation or test windows predict, which training must not see.

Batches are raw (:class:`~rnn_lightning.data.batches.PriceWindows`: windows in the CSV's units, each
window's last close, the close or closes to predict). The scaling is fitted here, on the rows the training windows
use (inputs and targets), never on later rows (``scaler_fit="all"`` reproduces the tutorial, which fitted
on every row and so leaked the test period), and handed to the model, which applies it and carries it in
its ``state_dict``: see :mod:`rnn_lightning.models.scaling`.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.data.batches import InMemoryBatches, PriceWindows
from rnn_lightning.data.prices import DERIVED_FEATURES, make_windows, read_price_csv
from rnn_lightning.errors import UserInputError, check_choice, check_positive, resolve_count
from rnn_lightning.models.scaling import PRICE_COLUMNS, TARGET_TRANSFORMS, WINDOW_NORMS, normalise_windows

DEFAULT_FEATURES = ("Open", "High", "Low", "Volume")
# The tutorial's 431 trading days of ^KS11, shipped with the package (examples/SOURCES.md): the default CSV.
EXAMPLE_CSV = Path(__file__).resolve().parent / "examples" / "kospi_2019.csv"
SCALER_FITS = ("train", "all")
SPLITS = ("train", "val", "test")


def read_shared(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """:func:`read_price_csv`, read once per process for the same file and columns (the frame is not changed).

    A search or a backtest builds many data modules of one CSV; forked workers (``--tune.workers``,
    ``--backtest.workers``) then share the frame their parent read. The key holds the file's size and
    modification time, so a changed file is read again.
    """
    file = Path(path)
    if not file.is_file():
        return read_price_csv(path, columns)  # its one-line error
    stat = file.stat()
    return _read_cached(str(file.resolve()), stat.st_size, stat.st_mtime_ns, tuple(columns))


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, size: int, mtime_ns: int, columns: tuple[str, ...]) -> pd.DataFrame:
    return read_price_csv(path, list(columns))


class DailyPricesDataModule(InMemoryDataModule):
    """Next-day (or next H days') close forecasting from windows of any Yahoo-format daily price CSV.

    Args:
        csv_path: Yahoo-format daily CSV (Date, Open, High, Low, Close, Adj Close, Volume); None (the
            default) reads the tutorial's KOSPI window shipped with the package (:data:`EXAMPLE_CSV`).
        features: Input columns per day; ``LogReturn`` and ``Range`` are derived from the CSV.
        target: The column to forecast.
        horizon: Days ahead to forecast at once (H): each window's target is the next H closes (a (B, H)
            ``close`` field; (B,) for H = 1, exactly the one-day task).
        sequence_length: Days per input window.
        batch_size: Windows per training batch.
        split: Training windows (validation included): a count, or a fraction of all windows.
            Every window after them is a test window.
        val_size: Windows at the end of the training part held out for validation: a count or a
            fraction of the training part. 0 trains on all of them and validates on nothing.
        scaler_fit: ``train`` fits scaling on the training rows only; ``all`` reproduces the
            tutorial, whose scaler saw the test period.
        target_transform: ``level`` (the tutorial), ``diff`` or ``log_return`` against the
            window's last close.
        window_norm: ``none``, or ``last_close`` to divide each window's price columns by its
            last close, so the model never sees a level outside the training range.
    """

    # Names under which checkpoints of earlier versions filed this data module's state.
    former_names: tuple[str, ...] = ("KospiDataModule",)

    kind = "daily_prices"  # rnn_lightning.kinds.prices

    def __init__(
        self,
        csv_path: str | None = None,
        features: list[str] | None = None,
        target: str = "Close",
        horizon: int = 1,
        sequence_length: int = 5,
        batch_size: int = 20,
        split: int | float = 200,
        val_size: int | float = 0,
        scaler_fit: Literal["train", "all"] = "train",
        target_transform: Literal["level", "diff", "log_return"] = "level",
        window_norm: Literal["none", "last_close"] = "none",
    ) -> None:
        super().__init__(batch_size=batch_size)
        check_positive("sequence_length", sequence_length)
        check_positive("horizon", horizon)
        features = list(DEFAULT_FEATURES if features is None else features)
        if not features:
            raise UserInputError("features must name at least one column")
        check_choice("scaler_fit", scaler_fit, SCALER_FITS)
        check_choice("target_transform", target_transform, TARGET_TRANSFORMS)
        check_choice("window_norm", window_norm, WINDOW_NORMS)
        self.csv_path = str(EXAMPLE_CSV) if csv_path is None else csv_path
        self.features = features
        self.target = target
        self.horizon = horizon
        self._sequence_length = sequence_length
        self.split = split
        self.val_size = val_size
        self.scaler_fit = scaler_fit
        self.target_transform = target_transform
        self.window_norm = window_norm
        self._frame_loaded = False

    # Sizes the CLI links into the model.
    @property
    def input_size(self) -> int:
        return len(self.features)

    @property
    def sequence_length(self) -> int:
        return self._sequence_length

    @property
    def num_outputs(self) -> int:
        """Values the model forecasts per window: one per day ahead."""
        return self.horizon

    @property
    def has_validation(self) -> bool:
        return self.val_size != 0

    @property
    def scaling_spec(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "target_transform": self.target_transform,
            "window_norm": self.window_norm,
        }

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the CSV and split the windows in time (once), then hand the model its scaling."""
        self._read()
        self.hand_fitted(stage)

    def _read(self) -> None:
        """Read and validate the CSV and split the windows in time (once: Lightning calls setup per stage)."""
        if self._frame_loaded:
            return
        csv_columns = sorted(
            {self.target, *(c for f in self.features for c in DERIVED_FEATURES.get(f, ((f,), None))[0])}
        )
        frame = read_shared(self.csv_path, csv_columns)
        H = self.horizon
        num_windows = len(frame) - self.sequence_length - (H - 1)
        if num_windows < 2:
            what = f"sequence_length={self.sequence_length}" + (f" and horizon={H}" if H > 1 else "")
            raise UserInputError(
                f"{self.csv_path}: {len(frame)} rows are too few for {what}; "
                f"need at least {self.sequence_length + H + 1}"
            )
        # A count or fraction of the one-day windows, so the split falls on the same day for every horizon.
        split = resolve_count("split", self.split, num_windows + H - 1, allow_zero=False)
        if split >= num_windows:
            if H > 1 and split < num_windows + H - 1:
                raise UserInputError(
                    f"horizon={H} is too long for the test period: split={self.split} leaves "
                    f"{num_windows + H - 1 - split} test day(s) in {self.csv_path}; lower the horizon or the split"
                )
            raise UserInputError(
                f"split={self.split} leaves no test windows: {self.csv_path} gives {num_windows} windows "
                f"({len(frame)} rows - sequence_length {self.sequence_length}"
                + (f" - (horizon {H} - 1))" if H > 1 else ")")
            )
        val = resolve_count("val_size", self.val_size, split)
        if val >= split:
            raise UserInputError(f"val_size={self.val_size} leaves no training windows out of split={split}")
        if split - val - (H - 1) < 1:
            raise UserInputError(
                f"horizon={H} leaves no training windows: split={split} - val_size {val} - a gap of "
                f"horizon - 1 = {H - 1}"
            )
        self.dates = frame["Date"].reset_index(drop=True)
        self.close = torch.tensor(frame[self.target].to_numpy(np.float64))  # (N,), a copy the frame does not share
        # np.stack made a fresh array: no second copy of the (rows x features) values.
        self.raw_features = torch.from_numpy(
            np.stack([self._feature(frame, f) for f in self.features], axis=1)
        )  # (N, F)
        self.num_windows, self.num_train, self.num_val = num_windows, split - val, val
        self._frame_loaded = True

    def fingerprint(self) -> bytes:
        """Every close and raw feature of the read CSV, as bytes."""
        return self.close.numpy().tobytes() + self.raw_features.numpy().tobytes()

    def window_view(self, start: int, val_start: int, stop: int) -> DailyPricesDataModule:
        """A copy of this read data module holding windows ``[start, stop)`` only: a backtest fold's data.

        Windows ``[start, val_start)`` are its training split, ``[val_start, stop)`` its validation split
        and it has no test split. It holds rows ``[start, stop + offset)`` (``offset`` the rows from a
        window's first row to its last target row, plus one): the inputs and targets of those windows and
        nothing later, so the scaling its ``fitted_scaling()`` fits uses the view's training rows only.
        The CSV is not read again: the tensors are slices (views) of this module's; this module is not
        changed.
        """
        offset = len(self.close) - self.num_windows
        rows = slice(start, stop + offset)
        view = copy.copy(self)  # the same class and settings, the frame already loaded
        view.dates = self.dates.iloc[rows].reset_index(drop=True)
        view.close = self.close[rows]
        view.raw_features = self.raw_features[rows]
        view.num_windows = stop - start
        view.num_train = val_start - start
        view.num_val = stop - val_start
        return view

    def _feature(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        if name in DERIVED_FEATURES:
            return DERIVED_FEATURES[name][1](frame, self.target)
        column: np.ndarray = frame[name].to_numpy(np.float64)
        return column

    # --- windows: the public way to the data, for loaders, plots, prediction rows and the backtest -----

    def windows(self, part: slice | str = slice(None)) -> PriceWindows:
        """Raw windows of a split (``train``, ``val``, ``test``) or a slice of window indices, in time order."""
        rows = self.split_slice(part) if isinstance(part, str) else part
        T, W = self.sequence_length, self.num_windows
        x = make_windows(self.raw_features, T)[:W]  # (W, T, F)
        ref = self.close[T - 1 : -1][:W]  # (W,) each window's last known close
        if self.horizon == 1:
            close = self.close[T:]  # (W,) the next close
        else:
            close = self.close[T:].unfold(0, self.horizon, 1).contiguous()  # (W, H) the next H closes
        return PriceWindows(x[rows], ref[rows], close[rows])

    def forecast_window(self) -> PriceWindows:
        """The window of the CSV's last rows, whose next close(s) (from tomorrow on) are not known: NaN."""
        x = self.raw_features[-self.sequence_length :][None]  # (1, T, F)
        shape = (1,) if self.horizon == 1 else (1, self.horizon)
        return PriceWindows(x, self.close[-1:], torch.full(shape, math.nan, dtype=self.close.dtype))

    def split_slice(self, name: str) -> slice:
        """Window indices of ``train``, ``val`` or ``test``.

        For ``horizon`` H > 1, ``train`` stops H - 1 windows before ``val`` (or ``test``): those windows'
        targets are closes that later windows predict.
        """
        check_choice("split", name, SPLITS)
        bounds = {
            "train": slice(0, self.num_train - (self.horizon - 1)),
            "val": slice(self.num_train, self.num_train + self.num_val),
            "test": slice(self.num_train + self.num_val, self.num_windows),
        }
        return bounds[name]

    # --- scaling: fitted here, carried by the model ----------------------------------------------------

    @property
    def fit_rows(self) -> int:
        """Rows the scaling is fitted on: those the training windows use, inputs and targets."""
        if self.scaler_fit == "all":
            return len(self.close)
        return self.num_train + self.sequence_length

    def _normalised_range(self, windows: PriceWindows, chunk: int = 16_384) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature min and max of window-normalised windows, (F,) each, a chunk of windows at a time.

        The windows are views of the rows; normalising them all at once would copy every one (3.9 GB for
        10^6 rows of 60-day windows).
        """
        price_mask = torch.tensor([f in PRICE_COLUMNS for f in self.features])
        lows, highs = [], []
        for start in range(0, len(windows.x), chunk):
            part = normalise_windows(windows.x[start : start + chunk], windows.ref[start : start + chunk], price_mask)
            flat = part.reshape(-1, len(self.features))  # (chunk * T, F)
            lows.append(flat.min(dim=0).values)
            highs.append(flat.max(dim=0).values)
        return torch.stack(lows).min(dim=0).values, torch.stack(highs).max(dim=0).values

    def fitted_scaling(self) -> dict[str, Any]:
        """Min-max statistics of the inputs and the target scale, from the training rows only.

        The keyword arguments of :meth:`~rnn_lightning.models.scaling.PriceScaling.set_fitted`.
        """
        rows = self.fit_rows
        # Windows whose inputs and targets all lie inside the rows.
        fit_windows = self.windows(slice(0, rows - self.sequence_length - (self.horizon - 1)))
        if self.window_norm == "none":
            feature_min, feature_max = (
                self.raw_features[:rows].min(dim=0).values,
                self.raw_features[:rows].max(dim=0).values,
            )
        else:
            feature_min, feature_max = self._normalised_range(fit_windows)
        transform = TARGET_TRANSFORMS[self.target_transform]
        if transform.centred_at_zero:
            # Scale without shifting, so an output of 0 is exactly the persistence forecast.
            close, ref = fit_windows.close, fit_windows.ref
            targets = transform.forward(close, ref if close.dim() == 1 else ref[:, None])  # (N,) or (N, H)
            offset, scale = 0.0, float(torch.sqrt(torch.mean(targets**2)))
        else:
            target_rows = self.close[:rows]
            offset, scale = float(target_rows.min()), float(target_rows.max() - target_rows.min())
        return {
            "feature_min": feature_min,
            "feature_max": feature_max,
            "target_offset": offset,
            "target_scale": scale,
        }

    def training_moves(self) -> torch.Tensor:
        """The training windows' targets before scaling (N, H) float64.

        Each day ahead's move from the window's last close, in the target transform's units (index points,
        differences or log returns).

        The quantile and Gaussian heads fit their naive distribution on these (always the training
        windows, whatever ``scaler_fit``).
        """
        train = self.windows("train")
        close = train.close.reshape(len(train.close), self.horizon)  # (N, H)
        return TARGET_TRANSFORMS[self.target_transform].forward(close, train.ref[:, None])

    # --- loaders -----------------------------------------------------------------------------------------

    def train_dataloader(self) -> InMemoryBatches:
        return self._loader(self.windows("train"), shuffle=True, batch_type=PriceWindows)

    def val_dataloader(self) -> InMemoryBatches | list[Any]:
        if not self.num_val:
            return []
        return self._loader(self.windows("val"), batch_type=PriceWindows)

    def test_dataloader(self) -> InMemoryBatches | list[Any]:
        return self._loader(self.windows("test"), batch_type=PriceWindows)

    def predict_dataloader(self) -> InMemoryBatches:
        """Every window in time order, then the window of the last rows: tomorrow's forecast."""
        every, tomorrow = self.windows(), self.forecast_window()
        joined = [torch.cat([a, b]) for a, b in zip(every, tomorrow, strict=True)]
        return self._loader(joined, shard=False, batch_type=PriceWindows)

    def prediction_rows(self) -> pd.DataFrame:
        """Date, split and naive forecast of every predicted row, in ``predict_dataloader`` order.

        One row per window (the day it predicts) and one ``forecast`` row for the next business day; for
        ``horizon`` H > 1, H rows per window, one per day ahead (with the window's ``origin`` date, its
        last known day, and ``h``, 1..H), and H ``forecast`` rows for the next H business days. Training
        windows left out before validation or test (H > 1) are ``gap`` rows.
        """
        T, H, W = self.sequence_length, self.horizon, self.num_windows
        split = ["gap"] * W
        for name in SPLITS:
            part = self.split_slice(name)
            split[part] = [name] * (part.stop - part.start)
        split.append("forecast")
        naive = torch.cat([self.windows().ref, self.close[-1:]]).numpy()  # (W + 1,)
        if H == 1:
            dates = list(self.dates[T:])
            dates.append(self.dates.iloc[-1] + pd.offsets.BDay(1))
            return pd.DataFrame({"date": pd.to_datetime(dates).date, "split": split, "naive_close": naive})
        last = self.dates.iloc[-1]
        origins = [*self.dates.iloc[T - 1 : T - 1 + W], last]  # (W + 1,) each window's last known day
        future = [
            *(self.dates.iloc[T + i : T + i + H] for i in range(W)),
            [last + pd.offsets.BDay(d) for d in range(1, H + 1)],
        ]  # (W + 1) x H days predicted
        return pd.DataFrame(
            {
                "date": pd.to_datetime([d for days in future for d in days]).date,
                "origin": pd.to_datetime([o for o in origins for _ in range(H)]).date,
                "h": np.tile(np.arange(1, H + 1), W + 1),
                "split": np.repeat(split, H),
                "naive_close": np.repeat(naive, H),
            }
        )

    # The data settings travel inside every checkpoint, so a checkpoint is never used on other columns.
    def _identity(self) -> dict:
        return {
            "kind": self.kind,
            "features": list(self.features),
            "target": self.target,
            "sequence_length": self.sequence_length,
            "horizon": self.horizon,
            "target_transform": self.target_transform,
            "window_norm": self.window_norm,
        }

    def state_dict(self) -> dict:
        return {"identity": self._identity()}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("identity", {})
        if not saved:
            return
        mine = self._identity()
        # Checkpoints from before horizons forecast one day; from before kinds, their identity named a task.
        saved = {"horizon": 1, "kind": self.kind, **saved}
        differ = [k for k in mine if saved.get(k) != mine[k]]
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}" for k in differ)
            raise UserInputError(f"the checkpoint was trained on different data settings ({pairs})")
