"""Windowed daily prices from a Yahoo-Finance CSV: read, validate, split in time, fit the scaling on train rows.

A window is ``sequence_length`` consecutive rows of features; its target is the next row's close. With
``N`` rows there are ``N - sequence_length`` windows, split chronologically into train, validation
(the end of the training part) and test (everything after ``split``).

Batches are raw (:class:`~rnn_lightning.data.batches.PriceWindows`: windows in the CSV's units, each
window's last close, the close to predict). The scaling is fitted here, on the rows the training windows
use (inputs and targets), never on later rows (``scaler_fit="all"`` reproduces the tutorial, which fitted
on every row and so leaked the test period), and handed to the model, which applies it and carries it in
its ``state_dict``: see :mod:`rnn_lightning.models.scaling`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.data.batches import PriceWindows
from rnn_lightning.data.prices import DERIVED_FEATURES, make_windows, read_price_csv
from rnn_lightning.errors import UserInputError, check_choice, check_positive, resolve_count
from rnn_lightning.models.scaling import PRICE_COLUMNS, TARGET_TRANSFORMS, WINDOW_NORMS, normalise_windows

DEFAULT_FEATURES = ("Open", "High", "Low", "Volume")
# The tutorial's 431 trading days of ^KS11, shipped with the package (examples/SOURCES.md): the default CSV.
EXAMPLE_CSV = Path(__file__).resolve().parent / "examples" / "kospi_2019.csv"
SCALER_FITS = ("train", "all")
SPLITS = ("train", "val", "test")


class KospiDataModule(InMemoryDataModule):
    """Next-day close forecasting from windows of daily prices (the tutorial's KOSPI task).

    Args:
        csv_path: Yahoo-format daily CSV (Date, Open, High, Low, Close, Adj Close, Volume); None (the
            default) reads the tutorial's KOSPI window shipped with the package (:data:`EXAMPLE_CSV`).
        features: Input columns per day; ``LogReturn`` and ``Range`` are derived from the CSV.
        target: The column to forecast one day ahead.
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

    task = "regression"

    def __init__(
        self,
        csv_path: str | None = None,
        features: list[str] | None = None,
        target: str = "Close",
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
        features = list(DEFAULT_FEATURES if features is None else features)
        if not features:
            raise UserInputError("features must name at least one column")
        check_choice("scaler_fit", scaler_fit, SCALER_FITS)
        check_choice("target_transform", target_transform, TARGET_TRANSFORMS)
        check_choice("window_norm", window_norm, WINDOW_NORMS)
        self.csv_path = str(EXAMPLE_CSV) if csv_path is None else csv_path
        self.features = features
        self.target = target
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
        return 1

    @property
    def has_validation(self) -> bool:
        return self.val_size != 0

    @property
    def scaling_spec(self) -> dict[str, Any]:
        return {"features": list(self.features), "target_transform": self.target_transform,
                "window_norm": self.window_norm}

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the CSV and split the windows in time (once: Lightning calls it per stage)."""
        if self._frame_loaded:
            return
        csv_columns = sorted(
            {self.target, *(c for f in self.features for c in DERIVED_FEATURES.get(f, ((f,), None))[0])}
        )
        frame = read_price_csv(self.csv_path, csv_columns)
        num_windows = len(frame) - self.sequence_length
        if num_windows < 2:
            raise UserInputError(
                f"{self.csv_path}: {len(frame)} rows are too few for sequence_length={self.sequence_length}; "
                f"need at least {self.sequence_length + 2}"
            )
        split = resolve_count("split", self.split, num_windows, allow_zero=False)
        if split >= num_windows:
            raise UserInputError(
                f"split={self.split} leaves no test windows: {self.csv_path} gives {num_windows} windows "
                f"({len(frame)} rows - sequence_length {self.sequence_length})"
            )
        val = resolve_count("val_size", self.val_size, split)
        if val >= split:
            raise UserInputError(f"val_size={self.val_size} leaves no training windows out of split={split}")
        self.dates = frame["Date"].reset_index(drop=True)
        self.close = torch.tensor(frame[self.target].to_numpy(np.float64))  # (N,)
        self.raw_features = torch.tensor(
            np.stack([self._feature(frame, f) for f in self.features], axis=1)
        )  # (N, F)
        self.num_windows, self.num_train, self.num_val = num_windows, split - val, val
        self._frame_loaded = True

    def _feature(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        if name in DERIVED_FEATURES:
            return DERIVED_FEATURES[name][1](frame, self.target)
        return frame[name].to_numpy(np.float64)

    # --- windows: the public way to the data, for loaders, plots, prediction rows and the backtest -----

    def windows(self, part: slice | str = slice(None)) -> PriceWindows:
        """Raw windows of a split (``train``, ``val``, ``test``) or a slice of window indices, in time order."""
        rows = self.split_slice(part) if isinstance(part, str) else part
        x = make_windows(self.raw_features, self.sequence_length)  # (W, T, F)
        ref = self.close[self.sequence_length - 1 : -1]  # (W,) each window's last known close
        close = self.close[self.sequence_length :]  # (W,) the next close
        return PriceWindows(x[rows], ref[rows], close[rows])

    def forecast_window(self) -> PriceWindows:
        """The window of the CSV's last rows, whose next close (tomorrow's) is not known: NaN."""
        x = self.raw_features[-self.sequence_length :][None]  # (1, T, F)
        return PriceWindows(x, self.close[-1:], torch.full((1,), math.nan, dtype=self.close.dtype))

    def split_slice(self, name: str) -> slice:
        """Window indices of ``train``, ``val`` or ``test``."""
        check_choice("split", name, SPLITS)
        bounds = {
            "train": slice(0, self.num_train),
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

    def fitted_scaling(self) -> dict[str, Any]:
        """Min-max statistics of the inputs and the target scale, from the training rows only.

        The keyword arguments of :meth:`~rnn_lightning.models.scaling.PriceScaling.set_fitted`.
        """
        rows = self.fit_rows
        fit_windows = self.windows(slice(0, rows - self.sequence_length))  # inputs and target inside the rows
        if self.window_norm == "none":
            fitted = self.raw_features[:rows]
        else:
            price_mask = torch.tensor([f in PRICE_COLUMNS for f in self.features])
            fitted = normalise_windows(fit_windows.x, fit_windows.ref, price_mask).reshape(-1, len(self.features))
        transform = TARGET_TRANSFORMS[self.target_transform]
        if transform.centred_at_zero:
            # Scale without shifting, so an output of 0 is exactly the persistence forecast.
            targets = transform.forward(fit_windows.close, fit_windows.ref)
            offset, scale = 0.0, float(torch.sqrt(torch.mean(targets**2)))
        else:
            target_rows = self.close[:rows]
            offset, scale = float(target_rows.min()), float(target_rows.max() - target_rows.min())
        return {"feature_min": fitted.min(dim=0).values, "feature_max": fitted.max(dim=0).values,
                "target_offset": offset, "target_scale": scale}

    # --- loaders -----------------------------------------------------------------------------------------

    def train_dataloader(self):
        return self._loader(self.windows("train"), shuffle=True, batch_type=PriceWindows)

    def val_dataloader(self):
        if not self.num_val:
            return []
        return self._loader(self.windows("val"), batch_type=PriceWindows)

    def test_dataloader(self):
        return self._loader(self.windows("test"), batch_type=PriceWindows)

    def predict_dataloader(self):
        """Every window in time order, then the window of the last rows: tomorrow's forecast."""
        every, tomorrow = self.windows(), self.forecast_window()
        joined = [torch.cat([a, b]) for a, b in zip(every, tomorrow, strict=True)]
        return self._loader(joined, shard=False, batch_type=PriceWindows)

    def prediction_rows(self) -> pd.DataFrame:
        """Date, split and naive forecast of every predicted row, in ``predict_dataloader`` order."""
        dates = list(self.dates[self.sequence_length :])
        dates.append(self.dates.iloc[-1] + pd.offsets.BDay(1))
        split = ["train"] * self.num_train + ["val"] * self.num_val
        split += ["test"] * (self.num_windows - len(split)) + ["forecast"]
        naive = torch.cat([self.windows().ref, self.close[-1:]]).numpy()
        return pd.DataFrame({"date": pd.to_datetime(dates).date, "split": split, "naive_close": naive})

    # The data settings travel inside every checkpoint, so a checkpoint is never used on other columns.
    def _identity(self) -> dict:
        return {
            "task": self.task,
            "features": list(self.features),
            "target": self.target,
            "sequence_length": self.sequence_length,
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
        differ = [k for k in mine if saved.get(k) != mine[k]]
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}" for k in differ)
            raise UserInputError(f"the checkpoint was trained on different data settings ({pairs})")
