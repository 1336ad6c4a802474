"""The streaming reader behind the panel cache: a long CSV/Parquet file read in chunks into numpy columns.

:func:`read_long_chunked` gives the same :class:`~rnn_lightning.data.panel.core.Panel`, and the same
one-line errors, as :func:`~rnn_lightning.data.panel.readers.read_long`, without holding the file as a
DataFrame: pyarrow record batches row group by row group for Parquet, pandas' chunked reader for CSV, one
sort by (id, time), then the checks block by block. :mod:`rnn_lightning.data.panel.cache` writes its
result to disk once.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lightning.data.panel.chunks import (
    csv_chunks,
    csv_columns,
    csv_rows,
    parquet_chunks,
    parquet_columns,
    parquet_rows,
)
from rnn_lightning.data.panel.core import (
    INFER_FREQ_TRIES,
    Panel,
    check_regular,
    date_text,
    infer_frequency,
    normalise_freq,
)
from rnn_lightning.data.panel.readers import PARQUET_SUFFIXES, _numbers, _parse_dates
from rnn_lightning.errors import UserInputError

# Rows per chunk read from the input: the build holds one chunk's pandas/arrow buffers at a time.
CHUNK_ROWS = 1 << 20
# Rows per call of check_regular: its expected-calendar arrays are a few int64 copies of the block.
CHECK_ROWS = 1 << 20


def read_long_chunked(
    path: str | Path,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    scratch: Path | None = None,
) -> Panel:
    """:func:`read_long` that streams the file in chunks instead of holding it as a DataFrame.

    Each chunk's columns become numpy arrays at once: ids as int32 codes into the distinct names (one
    Python dict lookup per distinct name per chunk, not per row), timestamps as int64 nanoseconds, the
    target as float32, covariates as float64, or float32 while every cell is exactly one (their
    static/past split compares exact values, as :func:`read_long` does). The rows are then ordered by
    ``np.lexsort`` on (id rank, time), skipped when the file is in that order already, and read through
    that order block by block. The checks are :func:`read_long`'s, run on each chunk or on the sorted
    blocks, and a file with several problems reports the one :func:`read_long` reports.

    Args:
        path: A ``.csv`` file, or a ``.parquet``/``.pq`` file (read with pyarrow, batch by batch).
        id_column: As :func:`read_long`.
        time_column: As :func:`read_long`.
        target_column: As :func:`read_long`.
        freq: As :func:`read_long`.
        covariates: As :func:`read_long`.
        chunk_rows: Rows per chunk.
        scratch: A folder for the kept columns: each is then a memory-mapped ``.npy`` file there
            instead of an array in memory, so the build of a panel larger than RAM runs from the page
            cache (the kernel writes the columns' pages out as it needs the memory). The folder must
            exist; the caller removes it once the panel is used. None: in memory.

    Returns:
        The panel: in memory, or with arrays mapped from ``scratch`` (:func:`load_cached` writes it to
        the cache).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise UserInputError(f"{source}: no such file; pass a long-format CSV or Parquet panel")
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    line_of: Callable[[int], str] = (lambda row: f"row {row + 1}") if parquet else (lambda row: f"line {row + 2}")
    try:
        raw_columns = parquet_columns(path) if parquet else csv_columns(path, id_column)
        names = [str(c).strip() for c in raw_columns]
        needed = {"id": id_column, "time": time_column, "target": target_column}
        for role, column in needed.items():
            if column not in names:
                found = ", ".join(names[:10]) or "none"
                raise UserInputError(f"{source}: no {role} column {column!r}; found {found}")
        extra = [c for c in names if c not in needed.values()] if covariates is None else list(covariates)
        for column in extra:
            if column not in names or column in needed.values():
                raise UserInputError(f"{source}: covariate column {column!r} is not a covariate of the file")
        wanted = [id_column, time_column, target_column, *extra]
        raw_of = {name: raw for raw, name in zip(raw_columns, names, strict=True)}
        chunks = (
            parquet_chunks(path, [raw_of[c] for c in wanted], chunk_rows)
            if parquet
            else csv_chunks(path, id_column, [raw_of[c] for c in wanted], chunk_rows)
        )
        capacity = parquet_rows(path) if parquet else csv_rows(path)
        stream = _Stream(source, line_of, id_column, time_column, target_column, extra, capacity, scratch)
        for start, local, names, frame in chunks:
            frame.columns = pd.Index(wanted[1:])
            stream.add(start, local, names, frame)
    except UserInputError:
        raise
    except ImportError as err:
        raise UserInputError(f"{source}: reading Parquet needs pyarrow ({err}); pip install pyarrow") from None
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{source}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{source}: not a readable panel file ({reason})") from None
    return stream.panel(freq)


@dataclass
class _Stream:
    """The columns of a long panel accumulated chunk by chunk, and the errors found so far.

    An error in one check does not stop the scan: :func:`read_long` runs each check on the whole file in
    turn (missing ids, then dates, then the target, ...), so the first error of a later check is only
    reported when no chunk fails an earlier one.
    """

    source: str
    line_of: Callable[[int], str]
    id_column: str
    time_column: str
    target_column: str
    covariates: list[str]
    capacity: int
    scratch: Path | None = None
    code_of: dict[str, int] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    kept: int = 0
    numeric_seen: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, UserInputError] = field(default_factory=dict)
    rows: int = 0

    def add(self, start: int, local: np.ndarray, names: list[str], frame: pd.DataFrame) -> None:
        """Check and keep one chunk whose first row is row ``start`` of the file.

        Args:
            start: The file row of the chunk's first row.
            local: int (rows,): each row's id as a position in ``names``, -1 where the id is missing.
            names: The chunk's distinct ids, as read_long spells them (``astype(str)``).
            frame: The chunk's time, target and covariate columns.
        """
        n = len(frame)
        if n == 0:
            return
        self.rows += n

        def where(row: int) -> str:
            return self.line_of(start + row)

        if (local < 0).any():
            raise UserInputError(f"{self.source}: {where(int(np.argmax(local < 0)))}: missing {self.id_column}")
        codes = self._codes(names)[local]
        ids = np.array(names, dtype=object)[local]  # only read by an error message

        dates: np.ndarray | None = None
        try:
            dates = _parse_dates(frame[self.time_column], ids, self.source, where)
        except UserInputError as err:
            self.errors.setdefault("dates", err)
        y: np.ndarray | None = None
        extras: dict[str, np.ndarray] = {}
        if dates is not None:
            try:
                y = _numbers(frame[self.target_column], self.target_column, ids, dates, self.source, where)
            except UserInputError as err:
                self.errors.setdefault("target", err)
            for column in self.covariates:
                cells = frame[column]
                if not pd.to_numeric(cells, errors="coerce").isna().all():
                    self.numeric_seen[column] = True
                try:
                    extras[column] = _numbers(cells, column, ids, dates, self.source, where)
                except UserInputError as err:
                    self.errors.setdefault(f"covariate {column}", err)
        else:
            for column in self.covariates:  # the not-numeric check reads every cell, dates or not
                if not pd.to_numeric(frame[column], errors="coerce").isna().all():
                    self.numeric_seen[column] = True
        if dates is None or y is None or "dates" in self.errors or "target" in self.errors:
            return  # raised before any use of the data: keep scanning for an earlier check's error only
        self._keep("codes", codes)
        self._keep("stamps", dates.view(np.int64))
        self._keep("target", y, np.float32)
        for column, values in extras.items():
            self._keep_covariate(f"covariate {column}", values)
        self.kept += n

    def _keep_covariate(self, name: str, values: np.ndarray) -> None:
        """Keep float64 covariate cells as float32 while every cell so far is exactly a float32.

        The static/past split compares exact values, as read_long does on float64; on cells that are
        exactly float32 (flags, counts, codes, halves) the float32 comparison is the same one, at half
        the memory. The first cell that is not moves the column to float64 for good.
        """
        buffer = self.buffers.get(name)
        narrow = values.astype(np.float32)
        if (buffer is None or buffer.dtype == np.float32) and np.array_equal(narrow, values):
            self._keep(name, narrow, np.float32)
            return
        if buffer is not None and buffer.dtype == np.float32:
            wide = allocate(self.scratch, name, len(buffer), np.float64)
            wide[: self.kept] = buffer[: self.kept]
            self.buffers[name] = wide
        self._keep(name, values, np.float64)

    def _codes(self, names: list[str]) -> np.ndarray:
        """int32 codes of ``names`` in the panel's vocabulary (first seen, first numbered), new ones added.

        One C-level dict lookup per distinct id of the chunk: a chunk of a file written date after date
        holds every series, so this runs once per row of it, and must stay cheap.
        """
        lookup = np.fromiter(map(self.code_of.get, names, itertools.repeat(-1)), np.int64, len(names))
        for k in np.flatnonzero(lookup < 0):
            lookup[k] = self.code_of.setdefault(names[k], len(self.code_of))
        return lookup.astype(np.int32)

    def _keep(self, name: str, chunk: np.ndarray, dtype: type | None = None) -> None:
        """Copy ``chunk`` into its column's buffer, allocated once at the input's row count."""
        buffer = self.buffers.get(name)
        if buffer is None:
            buffer = self.buffers[name] = allocate(self.scratch, name, self.capacity, dtype or chunk.dtype)
        if self.kept + len(chunk) > len(buffer):  # only if the row count was underestimated
            grown = allocate(self.scratch, name, max(2 * len(buffer), self.kept + len(chunk)), buffer.dtype)
            grown[: self.kept] = buffer[: self.kept]
            buffer = self.buffers[name] = grown
        buffer[self.kept : self.kept + len(chunk)] = chunk

    def _take(self, name: str) -> np.ndarray:
        """The kept rows of a column (a view of its buffer), which the stream lets go of."""
        return self.buffers.pop(name)[: self.kept]

    def panel(self, freq: str | None) -> Panel:
        """Order the kept rows by (id, time), run the whole-panel checks and build the Panel.

        The rows are never copied into sorted order as a whole, only block by block (whole series of
        about :data:`CHECK_ROWS` rows): each check and each output column reads its block through the
        sort order, so the build holds the kept columns, the order and one block at a time.
        """
        source = self.source
        if self.rows == 0:
            raise UserInputError(f"{source}: the panel is empty (no rows under the header)")
        for check in ("dates", "target"):
            if check in self.errors:
                raise self.errors[check]

        names = sorted(self.code_of, key=self.code_of.__getitem__)  # by code
        ids = sorted(names)
        rank = np.empty(len(names), dtype=np.int32)
        rank[[self.code_of[s] for s in ids]] = np.arange(len(ids), dtype=np.int32)
        codes = self._take("codes")
        lengths = np.zeros(len(ids), dtype=np.int64)
        for first in range(0, len(codes), CHECK_ROWS):  # in place, block by block: no second copy
            block = codes[first : first + CHECK_ROWS] = rank[codes[first : first + CHECK_ROWS]]
            lengths += np.bincount(block, minlength=len(ids))  # bincount casts to int64: a block's worth
        stamps = self._take("stamps")
        rows = _SortedRows(_sort_order(codes, stamps), lengths, self.scratch)
        del codes
        offsets = rows.offsets

        for a, b in rows.blocks:  # duplicates first, in the whole panel, as read_long checks them
            block = rows.gather(stamps, a, b)
            same = block[1:] == block[:-1]
            same[offsets[a + 1 : b] - offsets[a] - 1] = False  # the last row of one series, the first of the next
            if same.any():
                k = int(offsets[a]) + int(np.argmax(same))
                i = int(np.searchsorted(offsets, k, side="right")) - 1
                raise UserInputError(
                    f"{source}: series {ids[i]!r}: duplicated {self.time_column} "
                    f"{date_text(stamps[rows.row(k)].astype('datetime64[ns]'))} "
                    f"({self.line_of(rows.row(k))} and {self.line_of(rows.row(k + 1))}); "
                    "keep one row per series and date"
                )
        if freq is not None:
            freq = normalise_freq(freq)
        else:  # the series infer_frequency asks, in their panel order, and only those
            top = np.sort(np.argsort(-rows.lengths, kind="stable")[:INFER_FREQ_TRIES])
            dates = np.concatenate([rows.gather(stamps, i, i + 1) for i in top]).view("datetime64[ns]")
            sub = np.concatenate([[0], np.cumsum(rows.lengths[top])]).astype(np.int64)
            freq = infer_frequency(dates, sub, [ids[i] for i in top], source)
        for a, b in rows.blocks:
            block = rows.gather(stamps, a, b).view("datetime64[ns]")
            check_regular(block, offsets[a : b + 1] - offsets[a], ids[a:b], freq, source)
        starts = stamps[rows.rows_of(offsets[:-1])].view("datetime64[ns]")
        del stamps

        values = rows.arrange(self._take("target"), "sorted target")
        past_names: list[str] = []
        static_names: list[str] = []
        past_columns: list[np.ndarray] = []
        static_columns: list[np.ndarray] = []
        for column in self.covariates:
            if not self.numeric_seen.get(column, False):
                raise UserInputError(
                    f"{source}: covariate column {column!r} is not numeric; name the numeric ones with covariates=[...]"
                )
            if f"covariate {column}" in self.errors:
                raise self.errors[f"covariate {column}"]
            cells = self._take(f"covariate {column}")
            if rows.constant_within(cells):
                static_names.append(column)
                static_columns.append(cells[rows.rows_of(offsets[:-1])].astype(np.float32))
            else:
                past_names.append(column)
                past_columns.append(rows.arrange(cells, f"sorted {column}"))
            del cells
        return Panel(
            ids=ids,
            values=values,
            offsets=offsets,
            starts=starts,
            freq=freq,
            past=_stack(past_columns, self.scratch),
            past_names=past_names,
            static=_stack(static_columns),
            static_names=static_names,
            source=source,
        )


class _SortedRows:
    """The kept rows' order by (id, time), and the blocks of whole series it is applied in.

    Args:
        order: File row of each sorted row (int32 when the rows fit), or None when the file is in
            (id, time) order already.
        lengths: Each series' row count, in id order.
        scratch: Where sorted copies are mapped (:func:`allocate`); None: in memory.
    """

    def __init__(self, order: np.ndarray | None, lengths: np.ndarray, scratch: Path | None = None) -> None:
        self.order = order
        self.scratch = scratch
        self.lengths = lengths.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.blocks: list[tuple[int, int]] = []
        n, begin = len(self.lengths), 0
        while begin < n:
            end = int(np.searchsorted(self.offsets, self.offsets[begin] + CHECK_ROWS, side="right")) - 1
            end = min(max(end, begin + 1), n)
            self.blocks.append((begin, end))
            begin = end

    def row(self, k: int) -> int:
        """The file row of sorted position ``k``."""
        return k if self.order is None else int(self.order[k])

    def rows_of(self, k: np.ndarray) -> np.ndarray:
        """The file rows of sorted positions ``k``."""
        return k if self.order is None else self.order[k]

    def gather(self, column: np.ndarray, a: int, b: int) -> np.ndarray:
        """Series ``a`` to ``b - 1`` of ``column`` (file order) in sorted order."""
        first, last = int(self.offsets[a]), int(self.offsets[b])
        return column[first:last] if self.order is None else column[self.order[first:last]]

    def arrange(self, column: np.ndarray, name: str = "sorted") -> np.ndarray:
        """float32 ``column`` in sorted order, converted block by block (no sorted float64 copy)."""
        if self.order is None and column.dtype == np.float32:
            return column
        out = allocate(self.scratch, name, len(column), np.float32)
        for a, b in self.blocks:
            out[self.offsets[a] : self.offsets[b]] = self.gather(column, a, b)
        return out

    def constant_within(self, column: np.ndarray) -> bool:
        """Whether every series' cells equal its first: read_long's static test, on exact float64 values."""
        for a, b in self.blocks:
            block = self.gather(column, a, b)
            changes = block[1:] != block[:-1]
            changes[self.offsets[a + 1 : b] - self.offsets[a] - 1] = False  # a new series may start elsewhere
            if changes.any():
                return False
        return True


def allocate(scratch: Path | None, name: str, rows: int | tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """An uninitialised array: in memory, or (``scratch`` a folder) a new memory-mapped ``.npy`` file there.

    Every call makes a new file (a column that grows or widens gets another one): the caller removes the
    whole ``scratch`` folder after the build.
    """
    if scratch is None:
        return np.empty(rows, dtype=dtype)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]  # a column's name may hold any character
    path = scratch / f"{safe}-{uuid.uuid4().hex[:8]}.npy"
    shape = (rows,) if isinstance(rows, int) else rows
    mapped: np.ndarray = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    return mapped


def _stack(columns: list[np.ndarray], scratch: Path | None = None) -> np.ndarray | None:
    """float32 (rows, len(columns)) of equal-length columns, or None for none; the list is emptied.

    One column becomes a view of itself; more are copied in and let go of one by one.
    """
    if not columns:
        return None
    if len(columns) == 1:
        return columns.pop().reshape(-1, 1)
    out = allocate(scratch, "past", (len(columns[0]), len(columns)), np.float32)
    for j in range(len(columns)):
        out[:, j] = columns[0]
        del columns[0]
    return out


def _sort_order(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray | None:
    """The stable order of rows by (code, stamp), or None when they are in it already (no copy needed).

    Whether they are is checked a block of rows at a time (each block overlapping the next by a row),
    so the check's boolean temporaries are a block's. Sorting needs the whole order: 4 or 8 bytes a
    row in memory, the one part of a build that a file in (id, time) order does not pay.
    """
    in_order = True
    for low in range(0, max(len(codes) - 1, 0), CHECK_ROWS):
        a, b = codes[low : low + CHECK_ROWS + 1], stamps[low : low + CHECK_ROWS + 1]
        if not ((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (b[1:] >= b[:-1]))).all():
            in_order = False
            break
    if in_order:
        return None
    order = np.lexsort((stamps, codes))
    return order.astype(np.int32) if len(order) < np.iinfo(np.int32).max else order
