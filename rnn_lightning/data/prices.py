"""Reading Yahoo-format daily price CSVs, the features derived from them, and sliding windows."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from rnn_lightning.errors import UserInputError


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
