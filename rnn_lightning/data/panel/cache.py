"""A long CSV/Parquet panel read once into a memory-mapped cache, and reused while the input is unchanged.

:func:`~rnn_lightning.data.panel.readers.read_long` holds the whole file as a DataFrame while it sorts and
checks it: fine for Tourism, not for 10^5 series of 300 steps with covariates (several pandas copies of
3 x 10^7 rows). :func:`load_cached` reads the same file in chunks (pyarrow row batches for Parquet,
pandas' chunked reader for CSV) into plain numpy columns, sorts them once by (id, time), runs the same
checks with the same one-line messages, and writes the panel's arrays as ``.npy`` files. The columns
it reads are kept in memory-mapped scratch files beside the entry while it builds, so the build, too,
runs in the page cache rather than in RAM (all but the sort order of a file that is not in (id, time)
order already: 4-8 bytes a row). Later loads
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
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from rnn_lightning.data.panel.core import (
    Panel,
)
from rnn_lightning.data.panel.stream import CHUNK_ROWS, read_long_chunked
from rnn_lightning.errors import UserInputError

# Bumped whenever the files of an entry change meaning; an entry of another version is rebuilt.
FORMAT_VERSION = 1
# The default cache folder, created beside the input file.
CACHE_FOLDER = ".rnn_lightning_cache"
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
        # The build's columns live in memory-mapped files here, not in RAM (a killed build's folder is
        # one of the leftovers the next build removes).
        scratch = entry.with_name(f"{entry.name}.tmp-build-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        scratch.mkdir()
        try:
            try:
                built = read_long_chunked(
                    path, id_column, time_column, target_column, freq, covariates, chunk_rows, scratch
                )
                _write_entry(built, entry, fingerprint)
                del built
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except UserInputError:
            if created:
                _remove_created_root(root, entry)
            raise
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
