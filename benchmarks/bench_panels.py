"""Panels at scale (issue 32, items 2 and 4): cache build, one training epoch and a forecast of every series.

Writes a synthetic long Parquet panel of ``--series`` series x ``--steps`` daily steps, row group by row
group (``bench_panel_cache.write_panel``: ``unique_id``, ``ds``, ``y``, a 0/1 past covariate ``promo`` and
a static ``size``), then runs, each in its own child process (wall time and the child's peak RSS, the
``ru_maxrss`` of ``os.wait4``, what ``resource.getrusage(RUSAGE_CHILDREN)`` reports after one child, and
the peak of its anonymous memory, which leaves out the pages of mapped files: :class:`ResidentSampler`):

* ``build``: :func:`~rnn_lightning.data.panel.cache.load_cached` into an empty cache folder;
* ``fit``: ``rnn-lightning fit`` of the panel GRU (hidden 64, flatten readout, series embedding 8,
  per-window normalisation: the settings of the first Tourism monthly config, pinned here so that the
  config's tuning does not move the benchmark) on the cached panel: one epoch,
  ``max_windows_per_series 1``, batch size 1024, two validation batches;
* ``predict``: ``rnn-lightning predict`` of every series' test window from that fit's checkpoint,
  ``predictions.csv`` included.

The ``fit`` child also measures the data loading share (item 4): :class:`LoadShare`, a callback, times
every ``next()`` on the training :class:`~rnn_lightning.data.panel.batches.PanelBatches` (the gather of a
batch, on the main process) against the epoch's wall time. ``--tourism`` measures the same share for one
epoch of ``configs/tourism_monthly.yaml``.

    python benchmarks/bench_panels.py                          # 10^4 and 10^5 series x 300 steps
    python benchmarks/bench_panels.py --series 1000000
    python benchmarks/bench_panels.py --series 100000 --jobs build fit
    python benchmarks/bench_panels.py --tourism --series        # only the Tourism loading share
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "tourism_monthly.yaml"
DATA = "rnn_lightning.data.panel.module.PanelDataModule"
HORIZON, INPUT_LENGTH, SEASON = 14, 56, 7
RESULT = "BENCH_RESULT "  # the children's one line of JSON starts with this


class LoadShare(pl.Callback):
    """Time spent producing training batches (``PanelBatches`` iteration) against each epoch's wall time.

    Patches :meth:`PanelBatches.__iter__` of this process so that every ``next()`` is timed, per split;
    prints one ``BENCH_RESULT`` JSON line at the end of fitting.
    """

    def __init__(self) -> None:
        from rnn_lightning.data.panel.batches import PanelBatches

        self.loading: dict[str, float] = {}
        self.batches: dict[str, int] = {}
        self.epochs: list[float] = []
        self._start = 0.0
        original = PanelBatches.__iter__
        share = self

        def timed(batches: Any) -> Iterator[Any]:
            iterator = original(batches)
            while True:
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                share.loading[batches.split] = share.loading.get(batches.split, 0.0) + time.perf_counter() - start
                share.batches[batches.split] = share.batches.get(batches.split, 0) + 1
                yield batch

        PanelBatches.__iter__ = timed  # type: ignore[method-assign]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append(time.perf_counter() - self._start)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_s = sum(self.epochs)
        train_s = self.loading.get("train", 0.0)
        record = {
            "epoch_s": epoch_s,
            "train_loading_s": train_s,
            "train_batches": self.batches.get("train", 0),
            "val_loading_s": self.loading.get("val", 0.0),
            "share": train_s / epoch_s if epoch_s else float("nan"),
        }
        print(RESULT + json.dumps(record), flush=True)


def cli_args(stage: str, path: Path, cache_dir: Path, root: Path) -> list[str]:
    """The ``rnn-lightning`` command line of the benchmark's ``fit`` or ``predict``."""
    args = [stage, "--seed_everything", "42", "--num_threads", "1", "--data.class_path", DATA]
    args += ["--data.source", str(path), "--data.cache_dir", str(cache_dir), "--data.window_norm", "standard"]
    args += ["--model.backbone", "gru", "--model.hidden_size", "64", "--model.num_layers", "1"]
    args += ["--model.readout", "flatten", "--model.series_embedding", "8", "--model.lr", "0.001"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.gradient_clip_val", "1.0"]
    args += ["--data.horizon", str(HORIZON), "--data.input_length", str(INPUT_LENGTH)]
    args += ["--data.season_length", str(SEASON), "--data.max_windows_per_series", "1"]
    args += ["--data.batch_size", "1024", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root)]
    args += ["--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0", "--plots.enabled", "false"]
    return args


CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench_panels import ResidentSampler
sampler = ResidentSampler()
job, path, cache_dir, root = sys.argv[2:6]
start = time.perf_counter()
if job == "build":
    from rnn_lightning.data.panel.cache import load_cached
    imported = time.perf_counter()
    panel = load_cached(path, cache_dir)
    record = {"values": int(len(panel.values)), "static": list(panel.static_names), "past": list(panel.past_names)}
else:
    from bench_panels import RESULT, cli_args
    from rnn_lightning.cli import main
    from pathlib import Path
    imported = time.perf_counter()
    sys.argv = sys.argv[:1]  # the CLI reads its args from main(), not this child's argv
    args = cli_args(job, Path(path), Path(cache_dir), Path(root))
    if job == "fit":
        args.append('--trainer.callbacks+={"class_path": "bench_panels.LoadShare"}')
    else:
        checkpoint = sorted(Path(root, "lightning_logs").glob("version_*/checkpoints/last.ckpt"))[-1]
        args += ["--ckpt_path", str(checkpoint)]
    main(args)
    record = {}
done = time.perf_counter()
record.update(sampler.stop())
print("BENCH_RESULT " + json.dumps({**record, "import_s": imported - start, "job_s": done - imported}), flush=True)
"""


class ResidentSampler:
    """Peak anonymous resident memory of this process, from ``/proc/self/status`` every 50 ms.

    ``ru_maxrss`` counts the pages of memory-mapped files (the panel cache, the build's scratch columns)
    with the process's own memory; those pages are the kernel's to write back or drop when it needs the
    RAM. ``RssAnon`` is what cannot be: the memory a panel's run really needs. Linux only (None
    elsewhere); a spike shorter than the interval can be missed.
    """

    INTERVAL_S = 0.05

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        if Path("/proc/self/status").exists():
            self._thread.start()

    def _read(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "RssAnon":
                self.peak_kb = max(self.peak_kb, int(rest.split()[0]))

    def _watch(self) -> None:
        while not self._done.wait(self.INTERVAL_S):
            self._read()

    def stop(self) -> dict[str, float | None]:
        """``{"anon_gb": ...}``: the peak so far (None without ``/proc``)."""
        if not self._thread.is_alive():
            return {"anon_gb": None}
        self._read()
        self._done.set()
        return {"anon_gb": self.peak_kb * 1024 / 1e9}


def run_child(job: str, path: Path, cache_dir: Path, root: Path) -> tuple[dict[str, Any], float, float]:
    """One job in a child process: (its ``BENCH_RESULT`` records merged, wall seconds, peak RSS in GB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-c", CHILD, str(HERE), job, str(path), str(cache_dir), str(root)]
    log = root / f"{job}.log"
    start = time.perf_counter()
    with log.open("w") as err:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env, cwd=root)
        assert child.stdout is not None
        out = child.stdout.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{job} child failed with status {code}:\n{out[-2000:]}\n{log.read_text()[-3000:]}")
    record: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith(RESULT):
            record.update(json.loads(line[len(RESULT) :]))
    return record, wall, usage.ru_maxrss * 1024 / 1e9  # KiB -> GB


def tourism_share(folder: Path) -> None:
    """The data loading share of one epoch of the shipped Tourism monthly config."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    script = Path(sys.executable).with_name("rnn-lightning")
    command = [str(script), "fit", "--config", str(CONFIG), "--trainer.max_epochs", "1", "--plots.enabled", "false"]
    command += ["--trainer.default_root_dir", str(folder / "tourism")]
    command.append('--trainer.callbacks+={"class_path": "bench_panels.LoadShare"}')
    out = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True, check=True).stdout
    record = json.loads(next(line for line in out.splitlines() if line.startswith(RESULT))[len(RESULT) :])
    print("| data | train batches | epoch s | building batches s | share |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| Tourism monthly (config, 1 epoch) | {record['train_batches']} | {record['epoch_s']:.2f} | "
        f"{record['train_loading_s']:.3f} | {100 * record['share']:.1f}% |",
        flush=True,
    )


def main() -> None:
    """Parse the options, then write and measure each size in turn."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--series", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--jobs", nargs="+", choices=("build", "fit", "predict"), default=["build", "fit", "predict"])
    parser.add_argument("--tourism", action="store_true", help="also the loading share of the Tourism config")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the panels (default: a temp folder)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_panel_cache import write_panel

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        folder = Path(name)
        if args.tourism:
            tourism_share(folder)
        if not args.series:
            return
        print("| series | values | job | wall s | of it, the job s | peak RSS GB | peak anonymous GB | notes |")
        print("|---:|---:|---|---:|---:|---:|---:|---|")
        for series in args.series:
            path = folder / f"panel_{series}.parquet"
            start = time.perf_counter()
            write_panel(path, series, args.steps, "series")
            size = path.stat().st_size / 1e6
            print(f"(wrote {path.name}, {size:.0f} MB, in {time.perf_counter() - start:.0f} s)", file=sys.stderr)
            cache_dir, root = folder / f"cache_{series}", folder / f"run_{series}"
            root.mkdir()
            for job in args.jobs:
                record, wall, peak = run_child(job, path, cache_dir, root)
                notes = ""
                if job == "build":
                    assert record["values"] == series * args.steps and record["static"] == ["size"], record
                if job == "fit":
                    notes = (
                        f"{record['train_batches']} batches, epoch {record['epoch_s']:.1f} s, building batches "
                        f"{record['train_loading_s']:.2f} s ({100 * record['share']:.1f}%)"
                    )
                anon = "" if record.get("anon_gb") is None else f"{record['anon_gb']:.2f}"
                print(
                    f"| {series:,} | {series * args.steps:,} | {job} | {wall:.1f} | {record['job_s']:.1f} | "
                    f"{peak:.2f} | {anon} | {notes} |",
                    flush=True,
                )
            path.unlink()


if __name__ == "__main__":
    main()
