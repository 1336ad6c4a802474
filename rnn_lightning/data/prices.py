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
    out: np.ndarray = np.zeros_like(close)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def _day_range(frame: pd.DataFrame, target: str) -> np.ndarray:
    spread: np.ndarray = ((frame["High"] - frame["Low"]) / frame[target]).to_numpy(np.float64)
    return spread


# Features computed from the CSV's columns rather than read from it: name -> (needed columns, function).
DERIVED_FEATURES: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame, str], np.ndarray]]] = {
    "LogReturn": ((), _log_return),
    "Range": (("High", "Low"), _day_range),
}


# Cells that mean "no value": a row of only these in the price columns is a Yahoo 'null' row.
MISSING_CELLS = ["", "null", "NaN", "nan", "NA"]
# Rows parsed at a time by the numeric path: its text (the dates) is held one chunk at a time.
FAST_CHUNK_ROWS = 1 << 20


def _read_numeric_csv(path: Path, columns: list[str]) -> tuple[pd.DataFrame, int, int, bool] | None:
    """:func:`read_price_csv`'s result for a clean file, parsed as numbers directly, or None.

    Reading every cell as a Python string costs memory and seconds before any check runs (measured in
    docs/long-series.md); pandas' C parser turns number columns into float64/int64 arrays at 8 bytes a
    cell, and read in chunks of :data:`FAST_CHUNK_ROWS` only one chunk's dates are ever held as text. This
    returns a result only when the file is certainly one the text path reads without error: the same
    ``read_csv`` call (same tokenising, so the same rows and columns) with no warning, every needed
    column present once, every price column parsed as int64/float64 (any other token, e.g. ``TRUE``,
    ``' null'``, ``1,5`` or ``0x1F``, leaves the column text), finite, and NaN only where a cell is
    exactly one of :data:`MISSING_CELLS` and then in every price column of the row (a 'null' row), and
    valid, unique dates. Anything else (None) goes through the text path, which raises or warns as it
    always has; this one warns nothing itself: it returns the 'null' row count, the first such row's
    line and whether the dates were out of order, for the caller's warnings.

    Numbers are the same: the C parser and ``pd.to_numeric`` on the stripped text give identical
    float64 values (checked on 4.5 * 10^5 random ``repr``, ``%.4f`` and ``%.17g`` strings).
    """
    needed = ["Date", *columns]
    values_parts: list[np.ndarray] = []
    null_parts: list[np.ndarray] = []
    date_parts: list[np.ndarray] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = pd.read_csv(
                path, encoding="utf-8-sig", keep_default_na=False, na_values=MISSING_CELLS, chunksize=FAST_CHUNK_ROWS
            )
            with reader:
                for frame in reader:
                    names = [str(c).strip() for c in frame.columns]
                    if len(set(names)) != len(names) or any(c not in names for c in needed):
                        return None
                    frame.columns = names
                    date_text = frame["Date"]
                    if not pd.api.types.is_string_dtype(date_text) or date_text.isna().any():
                        return None
                    if any(frame[c].dtype not in (np.int64, np.float64) for c in columns):
                        return None
                    values = np.stack([frame[c].to_numpy(np.float64) for c in columns], axis=1)  # (n, C)
                    del frame
                    missing = np.isnan(values)
                    null_rows = missing.all(axis=1)
                    if (missing.any(axis=1) & ~null_rows).any() or not np.isfinite(values[~null_rows]).all():
                        return None
                    if null_rows.any():
                        values, date_text = values[~null_rows], date_text[~null_rows]
                    # format="mixed" parses every value on its own, so a chunk at a time gives the same
                    # dates as the whole column, without a stripped copy of all of its strings at once.
                    dates = pd.to_datetime(date_text.str.strip(), errors="coerce", format="mixed")
                    if dates.isna().any() or not isinstance(dates.dtype, np.dtype):  # NaT, or time zones
                        return None
                    values_parts.append(values)
                    null_parts.append(null_rows)
                    date_parts.append(dates.to_numpy())
    except Exception:  # noqa: BLE001 - the text path reports it
        return None
    if caught or not null_parts:
        return None
    null_rows = np.concatenate(null_parts)
    if null_rows.all() or len({d.dtype for d in date_parts}) != 1:
        return None
    values = values_parts[0] if len(values_parts) == 1 else np.concatenate(values_parts)
    del values_parts
    dates = pd.Series(np.concatenate(date_parts))
    del date_parts
    if dates.duplicated().any():
        return None
    null_count = int(null_rows.sum())
    first_null_line = int(np.argmax(null_rows)) + 2 if null_count else 0  # the header is line 1
    result = pd.DataFrame(values, columns=columns, copy=False)
    result.insert(0, "Date", dates.to_numpy())
    unordered = False
    if not dates.is_monotonic_increasing:
        unordered = not dates.is_monotonic_decreasing
        result = result.sort_values("Date", kind="stable")
    return result.reset_index(drop=True), null_count, first_null_line, unordered


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
    fast = _read_numeric_csv(path, columns)
    if fast is not None:
        result, null_rows_count, first_null_line, unordered = fast
        if null_rows_count:
            warnings.warn(
                f"{path}: dropped {null_rows_count} row(s) without values (Yahoo 'null' rows), "
                f"first at line {first_null_line}",
                stacklevel=2,
            )
        if unordered:
            warnings.warn(f"{path}: rows were not in date order; sorted them by Date", stacklevel=2)
        return result
    # The general path: every cell read as text, so that whatever is wrong is named exactly.
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
    missing_cell = cells.isin(MISSING_CELLS)
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
        raise UserInputError(f"{path}: line {line}, column {column}: {cells.at[line, column]!r} is not a number")
    dates = pd.to_datetime(frame["Date"].str.strip(), errors="coerce", format="mixed")
    if dates.isna().any():
        line = int(dates.isna().idxmax())
        raise UserInputError(f"{path}: line {line}, column Date: {frame.at[line, 'Date']!r} is not a date")
    duplicated = dates.duplicated()
    if duplicated.any():
        line = int(duplicated.idxmax())
        raise UserInputError(f"{path}: line {line}: duplicate date {dates[line].date()}; remove the repeated row")
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
