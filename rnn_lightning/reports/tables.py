"""Writing a report's table (``predictions.csv``, ``series_metrics.csv``) fast, as pandas would write it.

``DataFrame.to_csv(float_format="%.6f")`` formats every float with one Python ``%`` call and hands every
row to the ``csv`` module: 35 of the 53 s of a forecast of 10^5 series (1.4 million rows, 8.4 million
floats; docs/panels.md). :func:`write_csv` writes the same text with vectorized Arrow kernels, a block
of rows at a time:

* a float becomes ``"%.6f" % value``, exactly: its digits come from ``rint(value * 10^6)`` as an
  integer, except where that product lies too close to a rounding tie (or too far from zero) for the
  float product to decide, and those few values are formatted by Python's ``%``; NaN is an empty cell;
* an integer is its decimal digits, a bool ``True``/``False``;
* a string is itself, or quoted as the ``csv`` module quotes (``QUOTE_MINIMAL``) when it holds a comma,
  a quote or a line break; a missing string is an empty cell;
* a datetime column is written as pandas writes it: the date alone when every value is a midnight,
  otherwise the date and the time to the column's finest non-zero unit (seconds, milli-, micro- or
  nanoseconds); NaT is an empty cell;
* any other column (Python objects such as ``datetime.date``) is ``str`` of each value.

A table with a column of another kind (categorical, timezone-aware, nullable integer...) is written by
pandas itself. The one difference from pandas: pandas picks a datetime column's format per block of
about ``100000 / n_columns`` rows, so a column whose midnights fill a whole block shows that block
without times; here the format is the column's. ``tests/test_report_tables.py`` checks the bytes
against ``to_csv`` on every kind's table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Rows formatted and written per block (memory: a few Arrow string arrays of this many rows).
BLOCK_ROWS = 1 << 18
# Characters that make the csv module quote a field (QUOTE_MINIMAL, "," delimiter, '"' quote char).
NEEDS_QUOTES = '[,"\r\n]'


def fixed_decimals(values: np.ndarray, decimals: int = 6) -> pa.Array:
    """``"%.{decimals}f" % v`` of every value as an Arrow string array (null for NaN), byte for byte.

    The float product ``v * 10^decimals`` is within half an ulp of the exact one, so its nearest integer
    is the exact product's unless the product's fraction lies within that error of one half; those
    values, infinities and products beyond 2^52 are formatted by Python's ``%``.
    """
    x = np.asarray(values, dtype=np.float64)
    scaled = x * 10.0**decimals
    nan = np.isnan(x)
    with np.errstate(invalid="ignore"):
        clear = np.abs(scaled - np.floor(scaled) - 0.5) > np.abs(scaled) * 2.0**-51
        clear &= np.abs(scaled) < 2.0**52
    python = ~clear & ~nan
    digits = np.abs(np.rint(np.where(clear, scaled, 0.0))).astype(np.int64)
    whole = pc.cast(pa.array(digits // 10**decimals), pa.string())
    sign = pc.if_else(pa.array(np.signbit(x)), "-", "")
    text = pc.binary_join_element_wise(sign, whole, "")
    if decimals > 0:
        part = pc.utf8_lpad(pc.cast(pa.array(digits % 10**decimals), pa.string()), decimals, "0")
        text = pc.binary_join_element_wise(text, part, ".")
    if python.any():
        exact = pa.array([f"%.{decimals}f" % v for v in x[python]], pa.string())
        text = pc.replace_with_mask(text, pa.array(python), exact)
    if nan.any():
        text = pc.if_else(pa.array(nan), pa.scalar(None, pa.string()), text)
    return text


def _quoted(text: pa.Array) -> pa.Array:
    """Strings quoted as the csv module quotes them under ``QUOTE_MINIMAL`` (only those that need it)."""
    needs = pc.fill_null(pc.match_substring_regex(text, NEEDS_QUOTES), False)
    if not pc.any(needs).as_py():
        return text
    doubled = pc.replace_substring(text, '"', '""')
    wrapped = pc.binary_join_element_wise('"', doubled, '"', "")
    return pc.if_else(needs, wrapped, text)


def _ticks_per_second(values: np.ndarray) -> int | None:
    """Ticks per second of a datetime64 array's unit (s, ms, us or ns), None for another unit."""
    unit, count = np.datetime_data(values.dtype)
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}.get(unit)
    return per_second if count == 1 else None


def _fraction_digits(values: np.ndarray) -> int | None:
    """How pandas writes a tz-naive datetime64 column: -1 for dates alone, else its second's fraction digits.

    -1 when every value is a midnight; otherwise the digits after ``%H:%M:%S`` (0, 3, 6 or 9: the finest
    non-zero unit). None for a unit other than s, ms, us or ns, or a year outside 1000-9999 (left to pandas).
    """
    per_second = _ticks_per_second(values)
    if per_second is None:
        return None
    known = values[~np.isnat(values)]
    years = known.astype("datetime64[Y]").astype(np.int64) + 1970
    if len(known) and (years.min() < 1000 or years.max() > 9999):
        return None
    ticks = known.view(np.int64)
    if (ticks % (86_400 * per_second) == 0).all():
        return -1
    finest = len(str(per_second)) - 1  # the unit's own digits
    return next(d for d in (0, 3, 6, 9) if d >= finest or (ticks % (per_second // 10**d) == 0).all())


def _padded(numbers: np.ndarray, width: int) -> pa.Array:
    """Non-negative integers as decimal strings, left-padded with zeros to ``width``."""
    return pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")


def _datetime_text(values: np.ndarray, digits: int) -> pa.Array:
    """A datetime64 column as :func:`_fraction_digits` says pandas writes it, NaT as null.

    Integer arithmetic on the ticks (``strftime`` costs about a microsecond a value).
    """
    per_second = _ticks_per_second(values) or 1
    nat = np.isnat(values)
    days = values.astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    years = months.astype("datetime64[Y]")
    parts = [
        _padded(years.astype(np.int64) + 1970, 4),
        _padded((months - years).astype(np.int64) + 1, 2),
        _padded((days - months).astype(np.int64) + 1, 2),
    ]
    text = pc.binary_join_element_wise(*parts, "-")
    if digits >= 0:
        ticks = (values - days).astype(np.int64)  # since midnight, in the unit's ticks
        seconds = ticks // per_second
        clock = [_padded(seconds // 3600, 2), _padded(seconds // 60 % 60, 2), _padded(seconds % 60, 2)]
        text = pc.binary_join_element_wise(text, pc.binary_join_element_wise(*clock, ":"), " ")
        if digits > 0:
            nanos = ticks % per_second * (10**9 // per_second)
            text = pc.binary_join_element_wise(text, _padded(nanos // 10 ** (9 - digits), digits), ".")
    if nat.any():
        text = pc.if_else(pa.array(nat), pa.scalar(None, pa.string()), text)
    return text


def _handled(column: pd.Series) -> bool:
    """Whether :func:`_column_text` writes this column (numpy numbers, bools, datetimes, objects, strings)."""
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype):
        return True
    if not isinstance(dtype, np.dtype):
        return False
    return dtype.kind in "fiubO" or (dtype.kind == "M" and _fraction_digits(column.to_numpy()) is not None)


def _column_text(column: pd.Series, decimals: int, digits: int | None) -> pa.Array:
    """One block of a :func:`_handled` column as Arrow strings (null: an empty cell).

    ``digits`` is the whole column's :func:`_fraction_digits` for a datetime column.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype):
        text = pa.array(column, type=pa.string(), from_pandas=True)  # no copy of Arrow-backed strings
        if isinstance(text, pa.ChunkedArray):  # a concatenated frame's column keeps its pieces
            text = text.combine_chunks()
        return _quoted(text)
    values = column.to_numpy()
    if dtype.kind == "f":
        return fixed_decimals(values, decimals)
    if dtype.kind in "iu":
        return pc.cast(pa.array(values), pa.string())
    if dtype.kind == "b":
        return pc.if_else(pa.array(values), "True", "False")
    if dtype.kind == "M" and digits is not None:
        return _datetime_text(values, digits)
    missing = pd.isna(values)  # objects: what the csv module writes, str() of each
    cells = [None if m else str(v) for v, m in zip(values, missing, strict=True)]
    return _quoted(pa.array(cells, pa.string()))


def _header(columns: pd.Index) -> bytes:
    """The header line, names quoted as the csv module quotes them."""
    names = _quoted(pa.array([str(c) for c in columns], pa.string())).to_pylist()
    return (",".join(names) + os.linesep).encode()


def _block_bytes(cells: list[pa.Array]) -> pa.Buffer | bytes:
    """The text of one block of rows, the cells of a row joined by commas, each row ended by a line break."""
    rows = pc.binary_join_element_wise(*cells, ",", null_handling="replace", null_replacement="")
    lines = pc.binary_join_element_wise(rows, os.linesep, "")
    if len(lines) == 0:
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset)
    data: pa.Buffer = lines.buffers()[2]
    return data[int(offsets[0]) : int(offsets[-1])]


def write_csv(frame: pd.DataFrame, path: str | Path, decimals: int = 6) -> None:
    """``frame.to_csv(path, index=False, float_format=f"%.{decimals}f")``, vectorized (see the module).

    A frame with a column of a kind the fast path does not handle is written by that ``to_csv`` call.
    """
    if len(frame.columns) == 0 or not all(_handled(frame.iloc[:, j]) for j in range(frame.shape[1])):
        frame.to_csv(path, index=False, float_format=f"%.{decimals}f")
        return
    digits = [
        _fraction_digits(frame.iloc[:, j].to_numpy()) if frame.dtypes.iloc[j].kind == "M" else None
        for j in range(frame.shape[1])
    ]
    with Path(path).open("wb") as file:
        file.write(_header(frame.columns))
        for start in range(0, len(frame), BLOCK_ROWS):
            block = frame.iloc[start : start + BLOCK_ROWS]
            file.write(_block_bytes([_column_text(block.iloc[:, j], decimals, digits[j]) for j in range(len(digits))]))
