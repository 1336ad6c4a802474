"""Time and peak memory of building the panel cache (issue 32, item 1) from a synthetic long Parquet file.

Writes, row group by row group, a Parquet panel of ``--series`` series x ``--steps`` daily steps with
columns ``unique_id`` (string), ``ds`` (timestamp), ``y`` (float32 random walk), ``promo`` (a 0/1 past
covariate) and ``size`` (a static covariate, constant per series), then in a child process per size:

* ``floor``: the imports alone (``rnn_lightning`` imports torch and lightning: about 1.2 GB resident
  before any data is read), the memory every other child starts from;
* ``build``: :func:`rnn_lightning.data.panel.cache.load_cached` into an empty cache folder (read, sort,
  check, write the ``.npy`` files);
* ``reuse``: :func:`load_cached` again in the same child (fingerprint, then memory-map the entry);
* with ``--compare``: :func:`rnn_lightning.data.panel.readers.read_long` on the same file, in its own
  child, for the memory of the whole-DataFrame path.

Peak resident memory is each child's own maximum RSS (``os.wait4``'s rusage, the number
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` gives after one child; ``/usr/bin/time -v``'s "Maximum
resident set size"); it includes the interpreter with numpy, pandas and pyarrow imported.

``--layout series`` (default) writes the rows series after series, as most exports do (the build skips
the sort); ``--layout time`` writes them date after date, every series in each date, so the build sorts
all rows (``np.lexsort``).

    python benchmarks/bench_panel_cache.py                               # 10^5 series x 300 steps
    python benchmarks/bench_panel_cache.py --series 10000 100000 --layout time
    python benchmarks/bench_panel_cache.py --series 100000 --compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from rnn_lightning.data.panel.cache import load_cached
from rnn_lightning.data.panel.readers import read_long
path, cache_dir, job = sys.argv[1:4]
if job == "floor":
    print(json.dumps({}))
elif job == "read_long":
    start = time.perf_counter()
    panel = read_long(path)
    print(json.dumps({"read_long_s": time.perf_counter() - start, "values": int(len(panel.values))}))
else:
    start = time.perf_counter()
    panel = load_cached(path, cache_dir)
    built = time.perf_counter() - start
    del panel
    start = time.perf_counter()
    panel = load_cached(path, cache_dir)
    reused = time.perf_counter() - start
    total = float(panel.values.sum(dtype="float64"))  # touch every value through the map
    print(json.dumps({"build_s": built, "reuse_s": reused, "values": int(len(panel.values)),
                      "past": list(panel.past_names), "static": list(panel.static_names), "sum": total}))
"""

GROUP_ROWS = 1 << 20  # rows per Parquet row group (pyarrow's default size)


def write_panel(path: Path, series: int, steps: int, layout: str, seed: int = 0) -> None:
    """Write the synthetic panel as Parquet without holding it whole (one row group at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = np.array([f"s{i:07d}" for i in range(series)], dtype=object)
    first_day = np.datetime64("2000-01-01", "ns") + (np.arange(series) % 7).astype("timedelta64[D]")
    size = rng.integers(1, 100, series).astype(np.float64)
    level = rng.normal(100, 20, series)
    day = np.timedelta64(1, "D")
    schema = pa.schema(
        [
            ("unique_id", pa.string()),
            ("ds", pa.timestamp("ns")),
            ("y", pa.float32()),
            ("promo", pa.float64()),
            ("size", pa.float64()),
        ]
    )

    def table(ids: np.ndarray, step: np.ndarray) -> pa.Table:
        y = level[ids] + np.cumsum(rng.normal(0, 1, len(ids))) % 50 + 5 * np.sin(step * 2 * np.pi / 7)
        return pa.table(
            {
                "unique_id": pa.array(names[ids], pa.string()),
                "ds": pa.array(first_day[ids] + step * day, pa.timestamp("ns")),
                "y": pa.array(y.astype(np.float32)),
                "promo": pa.array(rng.integers(0, 2, len(ids)).astype(np.float64)),
                "size": pa.array(size[ids]),
            },
            schema=schema,
        )

    with pq.ParquetWriter(path, schema) as writer:
        if layout == "series":
            per_group = max(1, GROUP_ROWS // steps)
            for first in range(0, series, per_group):
                ids = np.arange(first, min(first + per_group, series))
                writer.write_table(table(np.repeat(ids, steps), np.tile(np.arange(steps), len(ids))))
        else:
            per_group = max(1, GROUP_ROWS // series)
            for first in range(0, steps, per_group):
                step = np.arange(first, min(first + per_group, steps))
                writer.write_table(table(np.tile(np.arange(series), len(step)), np.repeat(step, series)))


def run_child(path: Path, cache_dir: Path, job: str) -> tuple[dict[str, object], float, float]:
    """Run one job in a child; (its JSON line, wall seconds, peak RSS in GB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(cache_dir), job], stdout=subprocess.PIPE)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{job} child failed with status {child.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024**2  # KiB -> GiB


def main() -> None:
    """Parse the options, write each panel, measure its cache build (and read_long with --compare)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[100_000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--layout", choices=("series", "time"), default="series")
    parser.add_argument("--compare", action="store_true", help="also time read_long (the whole-DataFrame path)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the panels (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        _, _, floor = run_child(Path(folder) / "none", Path(folder), "floor")
        print(f"floor (imports only): peak RSS {floor:.2f} GiB")
        print(
            "| series | rows | layout | Parquet MB | build s | peak RSS GiB | reuse s | read_long s | read_long GiB |"
        )
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for series in args.series:
            path = Path(folder) / f"panel_{series}.parquet"
            start = time.perf_counter()
            write_panel(path, series, args.steps, args.layout)
            print(f"(wrote {path.name} in {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            cache_dir = Path(folder) / f"cache_{series}"
            result, _, peak = run_child(path, cache_dir, "cache")
            assert result["values"] == series * args.steps and result["static"] == ["size"], result
            compare = ("", "")
            if args.compare:
                other, _, other_peak = run_child(path, cache_dir, "read_long")
                compare = (f"{other['read_long_s']:.1f}", f"{other_peak:.2f}")
            print(
                f"| {series:,} | {series * args.steps:,} | {args.layout} | {path.stat().st_size / 1e6:.0f} | "
                f"{result['build_s']:.1f} | {peak:.2f} | {result['reuse_s']:.2f} | {compare[0]} | {compare[1]} |",
                flush=True,
            )
            path.unlink()
            for leftover in sorted(cache_dir.rglob("*"), reverse=True):
                leftover.unlink() if leftover.is_file() else leftover.rmdir()


if __name__ == "__main__":
    main()
