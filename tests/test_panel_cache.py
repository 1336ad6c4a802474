"""The memory-mapped panel cache (rnn_lightning.data.panel.cache): equal to read_long, reused, rebuilt, atomic.

Every panel is tiny and synthetic, written to tmp_path; ``chunk_rows`` is set a few rows small so each
file is read in many chunks, with series cut across chunk boundaries.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnn_lightning.data.panel import cache, stream
from rnn_lightning.data.panel.cache import cache_location, load_cached, read_long_chunked
from rnn_lightning.data.panel.core import Panel
from rnn_lightning.data.panel.readers import read_long
from rnn_lightning.errors import UserInputError

LENGTHS = {"b": 30, "a": 24, "c": 40, "d10": 17}
CHUNK = 7  # rows per chunk: every series spans several chunks


def make_long(lengths: dict[str, int] = LENGTHS, seed: int = 0, freq: str = "MS") -> pd.DataFrame:
    """A long panel: y, a past covariate ``promo``, a static ``size`` (a float32-inexact 0.1 step)."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (uid, n) in enumerate(sorted(lengths.items())):
        ds = pd.date_range(pd.Timestamp("2010-01-01") + pd.DateOffset(months=k), periods=n, freq=freq)
        y = 100 * (k + 1) + np.cumsum(rng.normal(0, 5, n))
        promo = rng.integers(0, 2, n).astype(float)
        parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y.round(4), "promo": promo, "size": 0.1 * k + 1}))
    return pd.concat(parts, ignore_index=True)


def write(frame: pd.DataFrame, path: Path, shuffle: bool = True) -> Path:
    """``frame`` (rows shuffled) as CSV or Parquet by ``path``'s suffix."""
    if shuffle:
        frame = frame.sample(frac=1.0, random_state=1)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)  # keeps the shuffled index as a column pandas restores: not a covariate
    return path


def assert_same_panel(got: Panel, want: Panel) -> None:
    """Every field of two panels equal, arrays with their dtypes and shapes."""
    for name in ("ids", "freq", "past_names", "static_names", "season_length", "horizon", "nominal_starts"):
        assert getattr(got, name) == getattr(want, name), name
    for name in cache.ARRAY_FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def entries(root: Path) -> list[str]:
    """The names in a cache folder, lock files left out."""
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cache_equals_read_long_with_static_and_past_covariates(tmp_path: Path, suffix: str) -> None:
    path = write(make_long(), tmp_path / f"panel{suffix}")
    want = read_long(path)
    assert want.static_names == ["size"] and want.past_names == ["promo"]
    assert_same_panel(read_long_chunked(path, chunk_rows=CHUNK), want)
    # The build's columns in memory-mapped scratch files instead of RAM: the same panel, read from there.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mapped = read_long_chunked(path, chunk_rows=CHUNK, scratch=scratch)
    assert_same_panel(mapped, want)
    odd = write(make_long().rename(columns={"promo": "promo/day: ünï " + "x" * 300}), tmp_path / f"odd{suffix}")
    assert load_cached(odd, tmp_path / "odd_cache", chunk_rows=CHUNK).past_names == ["promo/day: ünï " + "x" * 300]
    assert isinstance(mapped.values, np.memmap) and Path(mapped.values.filename).parent == scratch.resolve()
    assert isinstance(mapped.past, np.memmap)
    panel = load_cached(path, chunk_rows=CHUNK)
    assert_same_panel(panel, want)
    assert panel.source == str(path)
    for name in ("values", "offsets", "starts", "past", "static"):
        assert isinstance(getattr(panel, name), np.memmap), name
    # Other options are another entry, equal to read_long with those options.
    options = {"freq": "MS", "covariates": ["promo"], "target_column": "y"}
    assert_same_panel(load_cached(path, chunk_rows=CHUNK, **options), read_long(path, **options))
    assert len(entries(tmp_path / cache.CACHE_FOLDER)) == 2


def test_sorted_input_integer_ids_and_one_chunk(tmp_path: Path) -> None:
    frame = make_long({"10": 12, "9": 15, "100": 13}).astype({"unique_id": int})
    path = write(frame, tmp_path / "ints.parquet", shuffle=False)
    want = read_long(path)
    assert want.ids == ["10", "100", "9"]  # string order, as read_long sorts them
    assert_same_panel(load_cached(path), want)
    assert_same_panel(load_cached(path, tmp_path / "other", chunk_rows=5), want)


@pytest.mark.parametrize("shuffle", [False, True])
def test_checks_and_counts_in_small_blocks_equal_read_long(
    tmp_path: Path, shuffle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order check, the row counts and the per-series checks of the build, a few rows at a time."""
    monkeypatch.setattr(stream, "CHECK_ROWS", 4)
    path = write(make_long({"b": 9, "a": 7, "c": 11}), tmp_path / "panel.parquet", shuffle=shuffle)
    assert_same_panel(load_cached(path, chunk_rows=CHUNK), read_long(path))
    frame = make_long({"a": 7, "b": 9})
    frame.loc[12, "ds"] = frame.loc[11, "ds"]  # a duplicated date in series b, past the first block
    bad = write(frame, tmp_path / "bad.parquet", shuffle=shuffle)
    with pytest.raises(UserInputError) as expected:
        read_long(bad)
    with pytest.raises(UserInputError) as got:
        load_cached(bad, chunk_rows=CHUNK)
    assert str(got.value) == str(expected.value)


def test_static_split_compares_exact_values_like_read_long(tmp_path: Path) -> None:
    frame = make_long()
    # Equal in float32, not in float64: past for read_long; and a float32-exact column turned inexact
    # only in the last rows (the cache's float32 buffer widened mid-file).
    frame["near"] = 0.1 + np.where(frame.index % 2 == 0, 0.0, 1e-12)
    frame["late"] = np.where(frame.index < len(frame) - 3, 2.0, 2.0 + 1e-9)
    path = write(frame, tmp_path / "panel.parquet", shuffle=False)
    want = read_long(path)
    assert want.past_names == ["promo", "near", "late"] and want.static_names == ["size"]
    assert_same_panel(load_cached(path, chunk_rows=CHUNK), want)


def test_second_load_reuses_the_cache_and_maps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(make_long(), tmp_path / "panel.parquet")
    builds: list[Path] = []
    original = cache.read_long_chunked

    def counting(*args: object, **kwargs: object) -> Panel:
        builds.append(Path(str(args[0])))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "read_long_chunked", counting)
    first = load_cached(path, tmp_path / "cache", chunk_rows=CHUNK)
    entry = cache_location(path, tmp_path / "cache")
    assert entry.parent == tmp_path / "cache" and (entry / "meta.json").is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    second = load_cached(path, tmp_path / "cache", chunk_rows=CHUNK)
    assert len(builds) == 1
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stamps
    assert_same_panel(second, first)
    assert isinstance(second.values, np.memmap) and Path(second.values.filename) == (entry / "values.npy").resolve()
    assert not second.values.flags.writeable
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["ids"] == first.ids and meta["freq"] == "MS" and meta["fingerprint"]["format"] == cache.FORMAT_VERSION
    assert sorted(meta["arrays"]) == ["offsets", "past", "starts", "static", "values"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rebuilt_when_the_input_changes_and_the_input_is_never_written(tmp_path: Path, suffix: str) -> None:
    path = write(make_long(), tmp_path / f"panel{suffix}")
    before = path.read_bytes()
    old = load_cached(path, chunk_rows=CHUNK)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, cache.CACHE_FOLDER])

    # Other values and another length: a new size and mtime.
    write(make_long({**LENGTHS, "e": 20}, seed=5), path)
    new = load_cached(path, chunk_rows=CHUNK)
    assert new.ids == [*old.ids, "e"]
    assert_same_panel(new, read_long(path))
    assert not np.array_equal(new.series("a"), old.series("a"))
    assert len(entries(tmp_path / cache.CACHE_FOLDER)) == 1  # the stale entry was replaced, not kept beside

    # The same size, only the values changed (and the mtime, as an edit later in time has).
    frame = make_long({**LENGTHS, "e": 20}, seed=5)
    frame["y"] = frame["y"][::-1].to_numpy()
    stat = path.stat()
    write(frame, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert_same_panel(load_cached(path, chunk_rows=CHUNK), read_long(path))
    # An old map stays valid after its entry is replaced (the files live on while mapped).
    assert np.isfinite(old.values).all() and len(old.values) == old.offsets[-1]


def test_a_killed_build_does_not_break_the_next_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(make_long(), tmp_path / "panel.parquet")
    entry = cache_location(path)
    entry.parent.mkdir()
    # What a build killed while writing leaves: its temporary folder, half written.
    leftover = entry.with_name(f"{entry.name}.tmp-99999-deadbeef")
    leftover.mkdir()
    (leftover / "values.npy").write_bytes(b"\x93NUMPY half")
    # And an entry folder without its meta.json (never a complete entry, but never trusted either).
    entry.mkdir()
    (entry / "values.npy").write_bytes(b"junk")
    assert_same_panel(load_cached(path, chunk_rows=CHUNK), read_long(path))
    assert entries(entry.parent) == [entry.name]

    # A build interrupted in this process removes its own temporary folder and leaves the entry as it was.
    write(make_long(seed=3), path)
    saved = np.save
    calls = []

    def interrupted(file: object, array: np.ndarray, **kwargs: object) -> None:
        calls.append(file)
        if len(calls) == 2:
            raise KeyboardInterrupt
        saved(file, array, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cached(path, chunk_rows=CHUNK)
    monkeypatch.setattr(np, "save", saved)
    assert entries(entry.parent) == [entry.name]
    assert_same_panel(load_cached(path, chunk_rows=CHUNK), read_long(path))


def _load_in_child(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    panel = load_cached(path, chunk_rows=CHUNK)
    entry = cache_location(path)
    queue.put((float(panel.values.sum()), os.stat(entry / "values.npy").st_ino))


def test_two_processes_loading_at_once_build_once(tmp_path: Path) -> None:
    path = write(make_long(), tmp_path / "panel.parquet")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_load_in_child, args=(str(path), queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results[0] == results[1]  # the same sums, read from the same file (one build)
    assert float(read_long(path).values.sum()) == pytest.approx(results[0][0])
    assert entries(tmp_path / cache.CACHE_FOLDER) == [cache_location(path).name]


def _bad_csvs() -> dict[str, str]:
    """name -> CSV text with a problem, some in a later chunk than another problem read_long reports later."""
    good = make_long({"a": 6, "b": 5}).to_csv(index=False)
    lines = good.splitlines()
    cells = [line.split(",") for line in lines]

    def edit(row: int, column: int, value: str, rows: list[list[str]] | None = None) -> list[list[str]]:
        rows = [list(r) for r in (rows or cells)]
        rows[row][column] = value
        return rows

    def text(rows: list[list[str]]) -> str:
        return "\n".join(",".join(r) for r in rows) + "\n"

    return {
        "duplicate": "\n".join([*lines, lines[3]]) + "\n",
        "gap": "\n".join(lines[:3] + lines[4:]) + "\n",
        "missing_y": text(edit(2, 2, "")),
        "text_y": text(edit(2, 2, "abc")),
        "no_id": good.replace("unique_id", "series"),
        "no_y": good.replace(",y,", ",value,"),
        "empty": lines[0] + "\n",
        "header_only_no_newline": lines[0],
        "text_covariate": make_long({"a": 6}).assign(promo="red").to_csv(index=False),
        "text_covariate_cell": text(edit(9, 3, "x")),
        "bad_date": text(edit(2, 1, "not-a-date")),
        # Two problems in different chunks: read_long's order of checks decides which is named.
        "bad_y_then_missing_id": text(edit(10, 0, "", edit(1, 2, "abc"))),
        "bad_covariate_then_bad_date": text(edit(10, 1, "nope", edit(1, 3, "x"))),
        "gap_then_duplicate": "\n".join(lines[:3] + lines[4:] + [lines[-1]]) + "\n",
        "bad_covariate_then_gap": text(edit(1, 3, "x", [c for i, c in enumerate(cells) if i != 9])),
        "empty_file": "",
    }


@pytest.mark.parametrize("case", sorted(_bad_csvs()))
def test_bad_input_raises_read_longs_one_line_error_and_leaves_no_cache(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(_bad_csvs()[case])
    before = path.read_bytes()
    with pytest.raises(UserInputError) as expected:
        read_long(path)
    with pytest.raises(UserInputError) as got:
        load_cached(path, chunk_rows=3)
    assert str(got.value) == str(expected.value)
    assert "\n" not in str(got.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # no cache folder, entry or lock
    # A cache folder that was there already keeps only its lock file: no entry, no temporary folder.
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(UserInputError):
        load_cached(path, kept, chunk_rows=3)
    assert entries(kept) == []


def test_bad_parquet_errors_equal_read_longs(tmp_path: Path) -> None:
    frame = make_long({"a": 6, "b": 5})
    cases = {
        "duplicate": pd.concat([frame, frame.iloc[[3]]], ignore_index=True),
        "missing_id": frame.assign(unique_id=frame.unique_id.where(frame.index != 8, None)),
        "missing_y": frame.assign(y=frame.y.where(frame.index != 7)),
        "gap": frame.drop(index=2),
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.parquet"
        bad.to_parquet(path, index=False)
        with pytest.raises(UserInputError) as expected:
            read_long(path)
        with pytest.raises(UserInputError) as got:
            load_cached(path, chunk_rows=3)
        assert str(got.value) == str(expected.value), name
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserInputError, match="junk.parquet: not a readable panel file"):
        load_cached(tmp_path / "junk.parquet")
    with pytest.raises(UserInputError, match="no such file"):
        load_cached(tmp_path / "none.csv")
    assert not (tmp_path / cache.CACHE_FOLDER).exists()
