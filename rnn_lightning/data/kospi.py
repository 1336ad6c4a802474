"""Windowed daily prices from a Yahoo-Finance CSV: read, validate, split in time, scale on train rows only.

A window is ``sequence_length`` consecutive rows of features; its target is the next row's close. With
``N`` rows there are ``N - sequence_length`` windows, split chronologically into train, validation
(the end of the training part) and test (everything after ``split``).

Scaling is fitted on the rows the training windows use (inputs and targets), never on later rows;
``scaler_fit="all"`` reproduces the tutorial, which fitted on every row and so leaked the test period.
The fitted scaling is part of the data module's ``state_dict`` and therefore of every checkpoint, so
``test`` and ``predict`` from a checkpoint scale exactly as training did.

Targets can be the price level (the tutorial), the change or the log return against the window's last
close; every prediction is turned back into a price before a metric or a plot sees it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rnn_lightning.data.base import InMemoryDataModule, check_positive, resolve_count
from rnn_lightning.errors import UserInputError

DEFAULT_FEATURES = ("Open", "High", "Low", "Volume")
# The tutorial's 431 trading days of ^KS11, shipped with the package (examples/SOURCES.md): the default CSV.
EXAMPLE_CSV = Path(__file__).resolve().parent / "examples" / "kospi_2019.csv"
# Columns measured in index points; per-window normalisation divides these by the window's last close.
PRICE_COLUMNS = frozenset({"Open", "High", "Low", "Close", "Adj Close"})


def _log_return(frame: pd.DataFrame, target: str) -> np.ndarray:
    close = frame[target].to_numpy(np.float64)
    out = np.zeros_like(close)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def _day_range(frame: pd.DataFrame, target: str) -> np.ndarray:
    return ((frame["High"] - frame["Low"]) / frame[target]).to_numpy(np.float64)


# Features computed from the CSV's columns rather than read from it: name -> (needed columns, function).
DERIVED_FEATURES: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame, str], np.ndarray]]] = {
    "LogReturn": ((), _log_return),
    "Range": (("High", "Low"), _day_range),
}


@dataclass(frozen=True)
class TargetTransform:
    """How a next-day close becomes a training target, given the window's last close ``ref``."""

    forward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    inverse: Callable[[Tensor, Tensor], Tensor]
    centred_at_zero: bool  # True when 0 means "no change", i.e. the persistence forecast


TARGET_TRANSFORMS: dict[str, TargetTransform] = {
    "level": TargetTransform(lambda close, ref: close, lambda y, ref: y, centred_at_zero=False),
    "diff": TargetTransform(lambda close, ref: close - ref, lambda y, ref: ref + y, centred_at_zero=True),
    "log_return": TargetTransform(
        lambda close, ref: np.log(close / ref), lambda y, ref: ref * torch.exp(y), centred_at_zero=True
    ),
}


@dataclass
class KospiScaling:
    """The fitted scaling, as plain numbers so that it travels inside a checkpoint.

    Features: ``(x - feature_min) / (feature_max - feature_min)`` per column (a constant column maps
    to 0). Target: ``(y - target_offset) / target_scale``.
    """

    feature_min: list[float]
    feature_max: list[float]
    target_offset: float
    target_scale: float

    def scale_features(self, x: np.ndarray) -> np.ndarray:
        lo = np.asarray(self.feature_min)
        span = np.asarray(self.feature_max) - lo
        return (x - lo) / np.where(span == 0, 1.0, span)

    def scale_target(self, y: np.ndarray) -> np.ndarray:
        return (y - self.target_offset) / self.target_scale

    def unscale_target(self, y: Tensor) -> Tensor:
        return y * self.target_scale + self.target_offset


def read_price_csv(path: str | Path, columns: list[str]) -> pd.DataFrame:
    """Read a Yahoo-format daily CSV and return its ``Date`` and ``columns``, oldest row first.

    Tolerates what real exports contain, and says so: Yahoo's ``null`` rows are dropped with a warning
    that counts them, descending dates are sorted, a UTF-8 BOM, CRLF line ends and extra columns are
    fine. Everything else that would silently train on garbage is a :class:`UserInputError` naming the
    file and the column or row at fault. The file is only read, never written.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file; pass a Yahoo-format daily CSV with --data.csv_path")
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory, not a CSV file")
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise UserInputError(f"{path}: not a readable CSV file ({reason})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    needed = ["Date", *columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns[:10]) or "none"
        raise UserInputError(
            f"{path}: missing column(s) {', '.join(missing)}; found {found} "
            f"(expected a Yahoo-format CSV: Date,Open,High,Low,Close,Adj Close,Volume)"
        )
    frame = frame[needed]
    if frame.empty:
        raise UserInputError(f"{path}: no data rows under the header")
    # Line numbers as a person sees them in an editor: the header is line 1.
    frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")

    cells = frame[columns].apply(lambda col: col.str.strip())
    missing_cell = cells.isin(["", "null", "NaN", "nan", "NA"])
    null_rows = missing_cell.all(axis=1)
    if null_rows.any():
        warnings.warn(
            f"{path}: dropped {int(null_rows.sum())} row(s) without values (Yahoo 'null' rows), "
            f"first at line {int(null_rows.idxmax())}",
            stacklevel=2,
        )
        frame, cells = frame[~null_rows], cells[~null_rows]
        if frame.empty:
            raise UserInputError(f"{path}: every row is empty ('null')")
    numbers = cells.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers.to_numpy(np.float64))
    if bad.to_numpy().any():
        line, column = next((ln, c) for ln in bad.index for c in columns if bad.at[ln, c])
        raise UserInputError(
            f"{path}: line {line}, column {column}: {cells.at[line, column]!r} is not a number"
        )
    dates = pd.to_datetime(frame["Date"].str.strip(), errors="coerce", format="mixed")
    if dates.isna().any():
        line = int(dates.isna().idxmax())
        raise UserInputError(f"{path}: line {line}, column Date: {frame.at[line, 'Date']!r} is not a date")
    duplicated = dates.duplicated()
    if duplicated.any():
        line = int(duplicated.idxmax())
        raise UserInputError(
            f"{path}: line {line}: duplicate date {dates[line].date()}; remove the repeated row"
        )
    result = numbers.astype(np.float64)
    result.insert(0, "Date", dates)
    if not dates.is_monotonic_increasing:
        if not dates.is_monotonic_decreasing:
            warnings.warn(f"{path}: rows were not in date order; sorted them by Date", stacklevel=2)
        result = result.sort_values("Date", kind="stable")
    return result.reset_index(drop=True)


def make_windows(values: Tensor, sequence_length: int) -> Tensor:
    """All ``len(values) - sequence_length`` input windows: ``out[i] = values[i : i + sequence_length]``.

    The last window (which has no next row to predict) is left out, as in the tutorial.
    """
    # unfold gives (N - T + 1, F, T); drop the final window and move time before features.
    return values.unfold(0, sequence_length, 1)[:-1].transpose(1, 2)  # (W, T, F)


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
        for name, value, choices in (
            ("scaler_fit", scaler_fit, ("train", "all")),
            ("target_transform", target_transform, tuple(TARGET_TRANSFORMS)),
            ("window_norm", window_norm, ("none", "last_close")),
        ):
            if value not in choices:
                raise UserInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        self.csv_path = str(EXAMPLE_CSV) if csv_path is None else csv_path
        self.features = features
        self.target = target
        self._sequence_length = sequence_length
        self.split = split
        self.val_size = val_size
        self.scaler_fit = scaler_fit
        self.target_transform = target_transform
        self.window_norm = window_norm
        self.scaling: KospiScaling | None = None
        self._frame_loaded = False
        self._tensors: dict[str, tuple[Tensor, ...]] = {}

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

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the CSV, split the windows in time and fit the scaling on train rows."""
        if self._frame_loaded:  # Lightning calls setup once per stage
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
        self.close = frame[self.target].to_numpy(np.float64)
        self.raw_features = np.stack([self._feature(frame, f) for f in self.features], axis=1)  # (N, F)
        self.num_windows, self.num_train, self.num_val = num_windows, split - val, val
        self._frame_loaded = True
        if self.scaling is None:  # a checkpoint's scaling (load_state_dict) takes precedence
            self.scaling = self._fit_scaling()
        self._tensors.clear()

    def _feature(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        if name in DERIVED_FEATURES:
            return DERIVED_FEATURES[name][1](frame, self.target)
        return frame[name].to_numpy(np.float64)

    @property
    def fit_rows(self) -> int:
        """Rows the scaling is fitted on: those the training windows use, inputs and targets."""
        if self.scaler_fit == "all":
            return len(self.close)
        return self.num_train + self.sequence_length

    def _window_inputs(self) -> np.ndarray:
        """Unscaled input windows (W, T, F), made relative to each window's last close if asked."""
        windows = make_windows(torch.from_numpy(self.raw_features), self.sequence_length).numpy()
        if self.window_norm == "last_close":
            ref = self._references()[:, None]  # (W, 1)
            windows = windows.copy()
            for j, name in enumerate(self.features):
                if name in PRICE_COLUMNS:
                    windows[:, :, j] = windows[:, :, j] / ref - 1.0
        return windows

    def _references(self) -> np.ndarray:
        """Each window's last known close, the anchor of the target transform and the naive forecast."""
        return self.close[self.sequence_length - 1 : -1].copy()  # (W,)

    def _raw_targets(self) -> np.ndarray:
        return TARGET_TRANSFORMS[self.target_transform].forward(
            self.close[self.sequence_length :], self._references()
        )

    def _fit_scaling(self) -> KospiScaling:
        rows = self.fit_rows
        # Windows whose inputs and target lie inside the fitted rows.
        fit_windows = rows - self.sequence_length
        if self.window_norm == "none":
            fitted = self.raw_features[:rows]
        else:
            fitted = self._window_inputs()[:fit_windows].reshape(-1, len(self.features))
        transform = TARGET_TRANSFORMS[self.target_transform]
        if transform.centred_at_zero:
            # Scale without shifting, so an output of 0 is exactly the persistence forecast.
            targets = self._raw_targets()[:fit_windows]
            offset, scale = 0.0, float(np.sqrt(np.mean(targets**2)))
        else:
            target_rows = self.close[:rows]
            offset, scale = float(target_rows.min()), float(target_rows.max() - target_rows.min())
        return KospiScaling(
            feature_min=fitted.min(axis=0).tolist(),
            feature_max=fitted.max(axis=0).tolist(),
            target_offset=offset,
            target_scale=scale if scale > 0 else 1.0,
        )

    def _all_windows(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scaled inputs (W, T, F), scaled targets (W, 1), last closes (W,) and true closes (W,)."""
        if "all" not in self._tensors:
            if self.scaling is None:
                raise RuntimeError("call setup() before asking for batches")
            x = torch.as_tensor(self.scaling.scale_features(self._window_inputs()), dtype=torch.float32)
            y = torch.as_tensor(self.scaling.scale_target(self._raw_targets()), dtype=torch.float32)
            ref = torch.as_tensor(self._references())
            close = torch.as_tensor(self.close[self.sequence_length :].copy())
            self._tensors["all"] = (x, y[:, None], ref, close)
        return self._tensors["all"]

    def split_slice(self, name: str) -> slice:
        """Window indices of ``train``, ``val`` or ``test``."""
        bounds = {
            "train": slice(0, self.num_train),
            "val": slice(self.num_train, self.num_train + self.num_val),
            "test": slice(self.num_train + self.num_val, self.num_windows),
        }
        return bounds[name]

    def split_tensors(self, name: str) -> tuple[Tensor, ...]:
        part = self.split_slice(name)
        return tuple(t[part] for t in self._all_windows())

    def to_price(self, y_scaled: Tensor, ref: Tensor) -> Tensor:
        """Turn scaled model outputs (B,) or (B, 1) into prices, given each window's last close."""
        assert self.scaling is not None
        y = self.scaling.unscale_target(y_scaled.reshape(-1).to(ref.dtype))
        return TARGET_TRANSFORMS[self.target_transform].inverse(y, ref)

    def train_dataloader(self):
        # Training needs inputs and targets only; the reference and actual closes (price-unit metrics)
        # ride along in the validation and test batches.
        x, y, _, _ = self.split_tensors("train")
        return self._loader((x, y), shuffle=True)

    def val_dataloader(self):
        if not self.num_val:
            return []
        return self._loader(self.split_tensors("val"))

    def test_dataloader(self):
        return self._loader(self.split_tensors("test"))

    def predict_dataloader(self):
        """Every window in time order, then the window of the last rows: tomorrow's forecast."""
        x, y, ref, close = self._all_windows()
        last = torch.as_tensor(self._window_inputs_last(), dtype=torch.float32)[None]
        x = torch.cat([x, last])
        y = torch.cat([y, torch.full((1, 1), math.nan)])
        ref = torch.cat([ref, torch.as_tensor(self.close[-1:])])
        close = torch.cat([close, torch.full((1,), math.nan, dtype=close.dtype)])
        return self._loader((x, y, ref, close), shard=False)

    def _window_inputs_last(self) -> np.ndarray:
        window = self.raw_features[-self.sequence_length :].copy()  # (T, F)
        if self.window_norm == "last_close":
            for j, name in enumerate(self.features):
                if name in PRICE_COLUMNS:
                    window[:, j] = window[:, j] / self.close[-1] - 1.0
        assert self.scaling is not None
        return self.scaling.scale_features(window)

    def prediction_rows(self) -> pd.DataFrame:
        """Date, split and naive forecast of every predicted row, in ``predict_dataloader`` order."""
        dates = list(self.dates[self.sequence_length :])
        dates.append(self.dates.iloc[-1] + pd.offsets.BDay(1))
        split = ["train"] * self.num_train + ["val"] * self.num_val
        split += ["test"] * (self.num_windows - len(split)) + ["forecast"]
        naive = np.append(self._references(), self.close[-1])
        return pd.DataFrame({"date": pd.to_datetime(dates).date, "split": split, "naive_close": naive})

    # The scaling travels inside every checkpoint.
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
        if self.scaling is None:
            return {}
        return {"identity": self._identity(), "scaling": asdict(self.scaling)}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        saved = state_dict.get("identity", {})
        mine = self._identity()
        differ = [k for k in mine if saved.get(k) != mine[k]]
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}" for k in differ)
            raise UserInputError(f"the checkpoint was trained on different data settings ({pairs})")
        self.scaling = KospiScaling(**state_dict["scaling"])
        self._tensors.clear()
