"""A long CSV/Parquet panel read once into a memory-mapped cache, and reused while the input is unchanged.

:func:`~rnn_lightning.data.panel.readers.read_long` holds the whole file as a DataFrame while it sorts and
checks it: fine for Tourism, not for 10^5 series of 300 steps with covariates (several pandas copies of
3 x 10^7 rows). :func:`load_cached` reads the same file in chunks (pyarrow row batches for Parquet,
pandas' chunked reader for CSV) into plain numpy columns, sorts them once by (id, time), runs the same
checks with the same one-line messages, and writes the panel's arrays as ``.npy`` files. Later loads
memory-map those files (``np.load(mmap_mode="r")``): nothing is read until used, a panel larger than RAM
trains from the page cache, and every process on the machine (DDP ranks) shares one copy of it.

The cache entry of an input is a folder named by a hash of the input's resolved path and the read
options, inside ``cache_dir`` (default ``.rnn_lightning_cache/`` beside the input)::

    .rnn_lightning_cache/
        panel.parquet-3f9c0d1e2a4b5c6d/      one entry: one input file read with one set of options
            meta.json                        ids, freq, column names, which arrays, the fingerprint
            values.npy offsets.npy starts.npy [past.npy] [static.npy]
        panel.parquet-3f9c0d1e2a4b5c6d.lock  serialises builds of that entry across processes

The fingerprint in ``meta.json`` is the input's size, ``mtime_ns`` and a hash of its first and last
megabyte, with the read options and :data:`FORMAT_VERSION`; any difference rebuilds the entry. A build
writes a temporary folder and renames it into place, under a :class:`filelock.FileLock`, so a killed
build leaves no half entry (its temporary folder is removed by the next build) and processes that start
together build once and all open the same files. The input file is only ever read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

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

# One chunk of the input: its first row in the file, each row's id as a position in the chunk's distinct
# ids (-1 where missing), those ids as strings, and the chunk's other columns (time, target, covariates).
_Chunk = tuple[int, np.ndarray, list[str], pd.DataFrame]

# Bumped whenever the files of an entry change meaning; an entry of another version is rebuilt.
FORMAT_VERSION = 1
# The default cache folder, created beside the input file.
CACHE_FOLDER = ".rnn_lightning_cache"
# Rows per chunk read from the input: the build holds one chunk's pandas/arrow buffers at a time.
CHUNK_ROWS = 1 << 20
# Rows per call of check_regular: its expected-calendar arrays are a few int64 copies of the block.
CHECK_ROWS = 1 << 20
# Bytes hashed at each end of the input for the fingerprint (catches a same-size rewrite within one
# mtime tick: a Parquet footer or a CSV's last rows change with the data).
FINGERPRINT_BYTES = 1 << 20
# The Panel fields stored as .npy files when they are not None.
ARRAY_FIELDS = ("values", "offsets", "starts", "past", "static", "test_values", "test_offsets", "timestamps")
# The Panel fields stored in meta.json.
META_FIELDS = ("freq", "past_names", "static_names", "season_length", "horizon", "nominal_starts")


def load_cached(
    path: str | Path,
    cache_dir: str | Path | None = None,
    *,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Panel:
    """The panel of a long CSV/Parquet file, built into a cache once and memory-mapped from it after.

    The panel equals :func:`~rnn_lightning.data.panel.readers.read_long`'s on the same file and options
    (same sorting, covariate split and errors), but its arrays are read-only ``np.memmap`` views of the
    cache's ``.npy`` files.

    Args:
        path: A ``.csv`` file, or a ``.parquet``/``.pq`` file.
        cache_dir: The folder holding cache entries; None uses ``.rnn_lightning_cache/`` beside ``path``.
        id_column: As :func:`read_long`.
        time_column: As :func:`read_long`.
        target_column: As :func:`read_long`.
        freq: As :func:`read_long`.
        covariates: As :func:`read_long`.
        chunk_rows: Rows read per chunk when the cache is built (memory per chunk, not the result).

    Returns:
        The panel; its ``source`` is ``str(path)`` as given.

    Raises:
        UserInputError: The input errors of :func:`read_long` (no cache entry is left behind), or a cache
            folder that cannot be written while the entry needs building.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise UserInputError(f"{source}: no such file; pass a long-format CSV or Parquet panel")
    options = _options(id_column, time_column, target_column, freq, covariates)
    entry = _entry(path, cache_dir, options)
    fingerprint = _fingerprint(path, options)
    root = entry.parent
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = _lock(entry)
        lock.acquire()
    except OSError as err:
        # A read-only cache (shared storage nobody rebuilds) is still usable while it is fresh.
        panel = _open_fresh(entry, fingerprint, source)
        if panel is not None:
            return panel
        raise UserInputError(
            f"{source}: cannot write the panel cache in {root} ({err.strerror or err}); pass a writable cache_dir"
        ) from None
    try:
        panel = _open_fresh(entry, fingerprint, source)
        if panel is not None:
            return panel
        _remove_leftovers(entry)
        try:
            built = read_long_chunked(path, id_column, time_column, target_column, freq, covariates, chunk_rows)
        except UserInputError:
            if created:
                _remove_created_root(root, entry)
            raise
        _write_entry(built, entry, fingerprint)
        del built
        opened = _open_fresh(entry, fingerprint, source)
        if opened is None:  # pragma: no cover - only if the entry vanished under the lock
            raise RuntimeError(f"{entry}: the panel cache just written cannot be opened")
        return opened
    finally:
        lock.release()


def cache_location(
    path: str | Path,
    cache_dir: str | Path | None = None,
    *,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
) -> Path:
    """The folder of ``path``'s cache entry under these read options (it may not exist yet).

    Named ``<file name>-<hash>``, the hash of the resolved path, the options and :data:`FORMAT_VERSION`:
    the same file read with other options (another target, other covariates) is another entry.
    """
    return _entry(Path(path), cache_dir, _options(id_column, time_column, target_column, freq, covariates))


def _entry(path: Path, cache_dir: str | Path | None, options: dict[str, object]) -> Path:
    """:func:`cache_location` of options already gathered by :func:`_options`."""
    resolved = path.resolve()
    key = json.dumps({"path": str(resolved), "options": options, "format": FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else resolved.parent / CACHE_FOLDER
    return root / f"{resolved.name}-{digest}"


def read_long_chunked(
    path: str | Path,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
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

    Returns:
        The panel, in memory (:func:`load_cached` writes it to the cache).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise UserInputError(f"{source}: no such file; pass a long-format CSV or Parquet panel")
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    line_of: Callable[[int], str] = (lambda row: f"row {row + 1}") if parquet else (lambda row: f"line {row + 2}")
    try:
        raw_columns = _parquet_columns(path) if parquet else _csv_columns(path, id_column)
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
            _parquet_chunks(path, [raw_of[c] for c in wanted], chunk_rows)
            if parquet
            else _csv_chunks(path, id_column, [raw_of[c] for c in wanted], chunk_rows)
        )
        capacity = _parquet_rows(path) if parquet else _csv_rows(path)
        stream = _Stream(source, line_of, id_column, time_column, target_column, extra, capacity)
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
            wide = np.empty(len(buffer), dtype=np.float64)
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
            buffer = self.buffers[name] = np.empty(self.capacity, dtype=dtype or chunk.dtype)
        if self.kept + len(chunk) > len(buffer):  # only if the row count was underestimated
            grown = np.empty(max(2 * len(buffer), self.kept + len(chunk)), dtype=buffer.dtype)
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
        for first in range(0, len(codes), CHECK_ROWS):  # in place, block by block: no second copy
            codes[first : first + CHECK_ROWS] = rank[codes[first : first + CHECK_ROWS]]
        stamps = self._take("stamps")
        rows = _SortedRows(_sort_order(codes, stamps), np.bincount(codes, minlength=len(ids)))
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

        values = rows.arrange(self._take("target"))
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
                past_columns.append(rows.arrange(cells))
            del cells
        return Panel(
            ids=ids,
            values=values,
            offsets=offsets,
            starts=starts,
            freq=freq,
            past=_stack(past_columns),
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
    """

    def __init__(self, order: np.ndarray | None, lengths: np.ndarray) -> None:
        self.order = order
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

    def arrange(self, column: np.ndarray) -> np.ndarray:
        """float32 ``column`` in sorted order, converted block by block (no sorted float64 copy)."""
        if self.order is None and column.dtype == np.float32:
            return column
        out = np.empty(len(column), dtype=np.float32)
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


def _stack(columns: list[np.ndarray]) -> np.ndarray | None:
    """float32 (rows, len(columns)) of equal-length columns, or None for none; the list is emptied.

    One column becomes a view of itself; more are copied in and let go of one by one.
    """
    if not columns:
        return None
    if len(columns) == 1:
        return columns.pop().reshape(-1, 1)
    out = np.empty((len(columns[0]), len(columns)), dtype=np.float32)
    for j in range(len(columns)):
        out[:, j] = columns[0]
        del columns[0]
    return out


def _sort_order(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray | None:
    """The stable order of rows by (code, stamp), or None when they are in it already (no copy needed)."""
    if (codes[1:] >= codes[:-1]).all():
        if ((codes[1:] > codes[:-1]) | (stamps[1:] >= stamps[:-1])).all():
            return None
    order = np.lexsort((stamps, codes))
    return order.astype(np.int32) if len(order) < np.iinfo(np.int32).max else order


def _csv_columns(path: Path, id_column: str) -> list[str]:
    """The header of a CSV as pandas reads it (the encoding and dtype arguments of read_long)."""
    return [str(c) for c in pd.read_csv(path, encoding="utf-8-sig", dtype={id_column: str}, nrows=0).columns]


def _csv_chunks(path: Path, id_column: str, columns: list[str], rows: int) -> Iterator[_Chunk]:
    """Each chunk of a CSV (:data:`_Chunk`), read as read_long reads the whole file; ``columns[0]`` is the id."""
    reader = pd.read_csv(path, encoding="utf-8-sig", dtype={id_column: str}, usecols=columns, chunksize=rows)
    start = 0
    with reader:
        for chunk in reader:
            local, uniques = pd.factorize(chunk[columns[0]], use_na_sentinel=True)
            yield start, local, pd.Index(uniques).astype(str).tolist(), chunk[columns[1:]]
            start += len(chunk)


def _csv_rows(path: Path) -> int:
    """An upper bound on a CSV's data rows without parsing it: its line breaks (pandas skips blank lines)."""
    count = 0
    with path.open("rb") as file:
        while block := file.read(1 << 24):
            count += block.count(b"\n")
    return count + 1


def _parquet_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer."""
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def _parquet_columns(path: Path) -> list[str]:
    """The data columns of a Parquet file: its schema less the index pandas stored with it."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = (schema.pandas_metadata or {}).get("index_columns", [])
    return [name for name in schema.names if name not in {c for c in index if isinstance(c, str)}]


def _parquet_chunks(path: Path, columns: list[str], rows: int) -> Iterator[_Chunk]:
    """Each record batch of a Parquet file (:data:`_Chunk`), row group by row group; ``columns[0]`` is the id.

    Only the batch is converted to pandas. The id column is dictionary-encoded by Arrow, so the distinct
    ids of a batch become Python strings once each, not once per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = 0
    with pq.ParquetFile(path) as file:
        # One reader per row group: a single reader over the whole file keeps buffers of the groups
        # already read, about a third of the file's decoded size by its end.
        batches = (
            batch
            for group in range(file.num_row_groups)
            for batch in file.iter_batches(rows, row_groups=[group], columns=columns, use_pandas_metadata=False)
        )
        for batch in batches:
            ids = batch.column(0)
            if not pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_encode()
            local = pc.fill_null(ids.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            names = ids.dictionary.to_pandas().astype(str).tolist()
            others = pa.RecordBatch.from_arrays(batch.columns[1:], names=[f"c{j}" for j in range(1, len(columns))])
            yield start, local, names, others.to_pandas()
            start += batch.num_rows


def _options(
    id_column: str, time_column: str, target_column: str, freq: str | None, covariates: Sequence[str] | None
) -> dict[str, object]:
    """The read options as one JSON-able dict: the cache key and part of the fingerprint."""
    return {
        "id_column": id_column,
        "time_column": time_column,
        "target_column": target_column,
        "freq": freq,
        "covariates": None if covariates is None else [str(c) for c in covariates],
    }


def _fingerprint(path: Path, options: dict[str, object]) -> dict[str, object]:
    """What identifies the input's content cheaply: size, mtime_ns, a hash of both ends, options, format."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as file:
        digest.update(file.read(FINGERPRINT_BYTES))
        if stat.st_size > 2 * FINGERPRINT_BYTES:
            file.seek(-FINGERPRINT_BYTES, os.SEEK_END)
        digest.update(file.read(FINGERPRINT_BYTES))
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ends_sha256": digest.hexdigest(),
        "options": options,
        "format": FORMAT_VERSION,
    }


def _lock(entry: Path) -> FileLock:
    """The inter-process lock beside ``entry``; its (empty) file stays after use, as filelock's do."""
    return FileLock(str(entry.with_name(entry.name + ".lock")))


def _write_entry(panel: Panel, entry: Path, fingerprint: dict[str, object]) -> None:
    """Write ``panel`` as ``entry`` atomically: a temporary sibling folder, renamed over the old entry."""
    temporary = entry.with_name(f"{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir()
    try:
        arrays = []
        for name in ARRAY_FIELDS:
            array = getattr(panel, name)
            if array is not None:
                np.save(temporary / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
                arrays.append(name)
        meta = {name: getattr(panel, name) for name in META_FIELDS}
        meta.update(ids=list(panel.ids), arrays=arrays, fingerprint=fingerprint, build=uuid.uuid4().hex)
        (temporary / "meta.json").write_text(json.dumps(meta))
        if entry.exists():  # stale: moved aside first, as a folder cannot be renamed over a full one
            stale = entry.with_name(f"{entry.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            entry.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)  # mapped files live on until their users close them
        temporary.rename(entry)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _open_fresh(entry: Path, fingerprint: dict[str, object], source: str) -> Panel | None:
    """The panel of ``entry`` with memory-mapped arrays, or None when it is missing, partial or stale."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    try:
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in meta["arrays"]}
        return Panel(
            ids=[str(i) for i in meta["ids"]],
            values=arrays["values"],
            offsets=arrays["offsets"],
            starts=arrays["starts"],
            freq=str(meta["freq"]),
            past=arrays.get("past"),
            past_names=list(meta["past_names"]),
            static=arrays.get("static"),
            static_names=list(meta["static_names"]),
            test_values=arrays.get("test_values"),
            test_offsets=arrays.get("test_offsets"),
            timestamps=arrays.get("timestamps"),
            season_length=meta["season_length"],
            horizon=meta["horizon"],
            nominal_starts=bool(meta["nominal_starts"]),
            source=source,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_leftovers(entry: Path) -> None:
    """Remove the temporary and stale folders of ``entry`` that killed builds left (called under the lock)."""
    for pattern in (f"{entry.name}.tmp-*", f"{entry.name}.old-*"):
        for leftover in entry.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_created_root(root: Path, entry: Path) -> None:
    """Undo the cache folder this call created for an input that failed, when it holds only the lock."""
    lock_file = entry.with_name(entry.name + ".lock")
    try:
        if [p.name for p in root.iterdir()] == [lock_file.name]:
            lock_file.unlink()
            root.rmdir()
    except OSError:
        pass
