"""Time ``rnn-lightning backtest`` beside separate ``fit`` + ``test`` commands.

Three parts, each a child process of the real CLI (``python -m rnn_lightning ...``), with its checkpoints and
logs in a temporary ``--trainer.default_root_dir``:

* ``a``: a 10-fold ``refit scratch`` backtest of ``configs/kospi_gru_returns.yaml`` on a long daily CSV
  (default: the Nikkei 225 file ``/work/shared/data/indices/n225_daily.csv`` when it exists; ``--csv`` for any
  Yahoo-format daily export, e.g. one downloaded with ``rnn-lightning-data``), ``--backtest.folds 10
  --backtest.test_size 250 --trainer.max_epochs 20``: the backtest's goal command (docs/backtest.md).
* ``b``: the same ten folds as ten separate ``rnn-lightning fit`` + ``rnn-lightning test`` commands, which is
  what a user without ``backtest`` would run. Fold ``k``'s boundaries are taken from the backtest's own plan
  (``rnn_lightning.backtest.plan_folds``): the CSV is cut after fold ``k``'s last test day (the ``null`` rows
  before it kept, as in the file), ``--data.split`` is the fold's origin (its training windows, validation
  included) and ``--data.val_size`` is the config's, so ``fit`` trains and validates on exactly the fold's
  windows and ``test`` (``--ckpt_path`` the fit's best checkpoint) scores its ``test_size`` test days. Each
  command pays its own interpreter start-up, imports and CSV read: that is the real cost of ten commands,
  and the part of a backtest's saving that does not come from the training itself.
* ``c``: ``configs/kospi_gru.yaml --backtest.folds 5 --backtest.test_size 40 --backtest.workers N`` on the bundled
  CSV (the config's default ``csv_path``), ``N`` from ``--c-workers`` (default: the CPUs, at most the folds).
  Goal: at most half the wall time of darts 0.48.1 ``historical_forecasts`` with retraining on the same folds
  (the darts comparison; its figures are in docs/backtest.md).
* ``d``: that darts run itself, ``benchmarks/darts_backtest.py`` under ``--darts-python`` (a Python with
  ``darts[torch]``; darts is not a dependency of this project), so that c and d are timed side by side on
  one machine and compared as a ratio.

For every command: wall seconds, CPU seconds (user + system, of the child and its descendants, from
``os.wait4``), peak resident memory (``ru_maxrss``) and the 1-minute load average before and after, since a
shared machine's other jobs slow the wall time (the CPU time much less). The table is printed as markdown;
``--json FILE`` also writes every measurement.

Run from the repository root::

    python benchmarks/bench_backtest.py                       # a, b and c (a and b: long)
    python benchmarks/bench_backtest.py --only c              # the darts goal's folds only
    python benchmarks/bench_backtest.py --only d,c,d --darts-python /tmp/darts/bin/python   # beside darts
    python benchmarks/bench_backtest.py --only a,b --csv my_index.csv
    python benchmarks/bench_backtest.py --folds 2 --epochs 1 --test-size 50 --c-folds 2 --c-epochs 2  # smoke

A part named twice runs twice (``d,c,d``: darts before and after, for the drift of a shared machine).
``--c-args '...'`` adds CLI options to c, e.g. ``--c-args '--last_checkpoint.every_n_epochs 301'`` (``last.ckpt``
written once, after the last epoch, instead of after every one).
``--keep DIR`` keeps the run folders (``DIR/a``, ``DIR/b/fold_KK``, ``DIR/c``) instead of deleting them, so
their ``summary.json`` / ``folds.csv`` can be read afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LONG_CSV = Path("/work/shared/data/indices/n225_daily.csv")
RETURNS_CONFIG = REPO / "configs" / "kospi_gru_returns.yaml"
GRU_CONFIG = REPO / "configs" / "kospi_gru.yaml"
DARTS_SECONDS = 133.0  # the darts goal's figure: 0.48.1 historical_forecasts, retrain, 5 folds of 40 days, 2 cores
DARTS_SCRIPT = Path(__file__).resolve().parent / "darts_backtest.py"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rnn_lightning", *args]


def run_measured(command: list[str], log: Path) -> dict:
    """Run ``command`` to the end; its wall and CPU seconds, peak RSS and the load around it."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "command": " ".join(command),
        "rc": process.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "log": str(log),
    }
    if process.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"failed (exit {process.returncode}): {result['command']}\n" + "\n".join(tail))
    return result


def combine(results: list[dict]) -> dict:
    """Commands run one after another: summed times, the highest peak, the load range."""
    return {
        "commands": len(results),
        "wall_s": sum(r["wall_s"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "user_s": sum(r["user_s"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "load_before": min(r["load_before"] for r in results),
        "load_after": max(r["load_after"] for r in results),
        "runs": results,
    }


def run_dir(root: Path) -> Path:
    found = sorted((root / "lightning_logs").glob("version_*"))
    return found[-1] if found else root


def summary_of(root: Path) -> dict:
    path = run_dir(root) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def part_a(args: argparse.Namespace, work: Path) -> dict:
    root = work / "a"
    command = cli(
        "backtest",
        "--config",
        str(args.config),
        "--data.csv_path",
        str(args.csv),
        "--backtest.folds",
        str(args.folds),
        "--backtest.test_size",
        str(args.test_size),
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.default_root_dir",
        str(root),
    )
    result = run_measured(command, work / "a.log")
    result["summary"] = summary_of(root)
    return result


def fold_plan(args: argparse.Namespace) -> tuple[list, list[str], int]:
    """The backtest's folds for the config and CSV, the valid rows' dates, and the window length."""
    from rnn_lightning.backtest import BacktestSettings, plan_folds, window_offset
    from rnn_lightning.data.daily import DailyPricesDataModule

    data = data_options(args.config)
    data["csv_path"] = str(args.csv)
    module = DailyPricesDataModule(**data)
    module.setup("fit")
    settings = BacktestSettings(folds=args.folds, test_size=args.test_size)
    folds = plan_folds(
        module.num_windows,
        settings,
        module.val_size,
        gap=window_offset(module) - module.sequence_length,
        source=str(args.csv),
    )
    dates = [str(d)[:10] for d in module.dates]
    return folds, dates, module.sequence_length


def data_options(config: Path) -> dict:
    """The config's ``data.init_args`` after its ``config:`` base and dotted keys (as the CLI reads them)."""
    import yaml

    def load(path: Path) -> dict:
        raw = yaml.safe_load(path.read_text()) or {}
        base = raw.pop("config", None)
        options = load(path.parent / base) if base else {}
        init = dict((options.get("data") or {}).get("init_args") or {})
        init.update(((raw.get("data") or {}).get("init_args")) or {})
        for key, value in raw.items():
            if key.startswith("data.init_args."):
                init[key.removeprefix("data.init_args.")] = value
        return {"data": {"init_args": init}}

    return dict(load(config)["data"]["init_args"])


def part_b(args: argparse.Namespace, work: Path) -> dict:
    folds, dates, sequence_length = fold_plan(args)
    lines = args.csv.read_text().splitlines()
    header, body = lines[0], [line for line in lines[1:] if line.strip()]
    results = []
    for fold in folds:
        last_day = dates[fold.stop - 1 + sequence_length]  # the day the fold's last test window predicts
        cut = work / f"b_fold_{fold.index:02d}.csv"
        cut.write_text("\n".join([header, *[line for line in body if line[:10] <= last_day]]) + "\n")
        root = work / "b" / f"fold_{fold.index:02d}"
        common = [
            "--config",
            str(args.config),
            "--data.csv_path",
            str(cut),
            "--data.split",
            str(fold.origin),
            "--trainer.default_root_dir",
            str(root),
        ]
        if args.seed is not None:
            # The backtest seeds fold k with seed_everything + k; do the same, so both fit the same models.
            common += ["--seed_everything", str(args.seed + fold.index)]
        fit = run_measured(
            cli("fit", *common, "--trainer.max_epochs", str(args.epochs)), work / f"b_fit_{fold.index:02d}.log"
        )
        best = sorted(run_dir(root).glob("checkpoints/best-*.ckpt"))
        if not best:
            raise SystemExit(f"no best checkpoint after {fit['command']}")
        test = run_measured(cli("test", *common, "--ckpt_path", str(best[-1])), work / f"b_test_{fold.index:02d}.log")
        fit["fold"], test["fold"] = fold.index, fold.index
        results += [fit, test]
        print(
            f"  b fold {fold.index}: fit {fit['wall_s']:.1f} s wall / {fit['cpu_s']:.1f} s CPU, "
            f"test {test['wall_s']:.1f} s / {test['cpu_s']:.1f} s",
            flush=True,
        )
    return combine(results)


def part_c(args: argparse.Namespace, work: Path) -> dict:
    root = work / "c"
    command = cli(
        "backtest",
        "--config",
        str(args.c_config),
        "--backtest.folds",
        str(args.c_folds),
        "--backtest.test_size",
        str(args.c_test_size),
        "--backtest.workers",
        str(args.c_workers),
        "--trainer.default_root_dir",
        str(root),
    )
    if args.c_epochs is not None:
        command += ["--trainer.max_epochs", str(args.c_epochs)]
    command += shlex.split(args.c_args)
    result = run_measured(command, work / "c.log")
    result["summary"] = summary_of(root)
    return result


def part_d(args: argparse.Namespace, work: Path) -> dict:
    command = [str(args.darts_python), str(DARTS_SCRIPT), "--folds", str(args.c_folds)]
    command += ["--test-size", str(args.c_test_size)]
    if args.c_epochs is not None:
        command += ["--epochs", str(args.c_epochs)]
    log = work / f"d{time.monotonic_ns()}.log"
    result = run_measured(command, log)
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    result["summary"] = json.loads(lines[-1]) if lines else {}
    return result


def row(name: str, what: str, r: dict, goal: str) -> str:
    return (
        f"| {name} | {what} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
        f"{r['load_before']:.1f} / {r['load_after']:.1f} | {goal} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="a,b,c", help="parts to run, e.g. 'a,c' (default: a,b,c)")
    parser.add_argument(
        "--csv", type=Path, default=DEFAULT_LONG_CSV, help=f"long daily CSV for a and b (default {DEFAULT_LONG_CSV})"
    )
    parser.add_argument("--config", type=Path, default=RETURNS_CONFIG, help="config of a and b")
    parser.add_argument("--folds", type=int, default=10, help="folds of a and b")
    parser.add_argument("--test-size", type=int, default=250, help="test days per fold of a and b")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per fold of a and b")
    parser.add_argument("--seed", type=int, default=42, help="the config's seed_everything (b seeds fold k with +k)")
    parser.add_argument("--c-config", type=Path, default=GRU_CONFIG, help="config of c")
    parser.add_argument("--c-folds", type=int, default=5)
    parser.add_argument("--c-test-size", type=int, default=40)
    parser.add_argument("--c-epochs", type=int, default=None, help="epochs of c (default: the config's, 301)")
    parser.add_argument(
        "--c-workers", type=int, default=None, help="--backtest.workers of c (default: the CPUs, at most the folds)"
    )
    parser.add_argument(
        "--c-args", default="", help="more CLI options for c, e.g. '--last_checkpoint.every_n_epochs 301'"
    )
    parser.add_argument("--darts-python", type=Path, default=None, help="a Python with darts[torch], for part d")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements to this file")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if set(parts) - {"a", "b", "c", "d"}:
        parser.error(f"--only takes a, b, c, d: {args.only}")
    if "d" in parts and args.darts_python is None:
        parser.error("part d needs --darts-python, a Python with darts[torch] (see benchmarks/darts_backtest.py)")
    if args.c_workers is None:
        args.c_workers = max(1, min(os.cpu_count() or 1, args.c_folds))
    if {"a", "b"} & set(parts) and not args.csv.is_file():
        parser.error(
            f"--csv {args.csv} not found: download a daily index CSV (rnn-lightning-data, or a Yahoo "
            "Finance export) and pass it, or run --only c"
        )
    args.csv = args.csv.resolve()

    work = Path(tempfile.mkdtemp(prefix="bench_backtest_")) if args.keep is None else args.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    runs: list[tuple[str, dict]] = []  # every run in order (a part named twice runs twice)
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()}, runs in {work}", flush=True)
    try:
        for part in parts:
            print(f"part {part} ...", flush=True)
            if part == "c" and "c" in results:
                shutil.rmtree(work / "c", ignore_errors=True)  # a second c: a fresh run folder
            results[part] = {"a": part_a, "b": part_b, "c": part_c, "d": part_d}[part](args, work)
            runs.append((part, results[part]))
            print(f"part {part}: {results[part]['wall_s']:.1f} s wall, {results[part]['cpu_s']:.1f} s CPU", flush=True)
    finally:
        if args.json is not None:
            args.json.write_text(json.dumps([{"part": n, **r} for n, r in runs], indent=2, default=str) + "\n")
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    ab = f"{args.folds} folds x {args.test_size} days, {args.epochs} epochs, {args.config.name}, {args.csv.name}"
    print()
    print("| part | what | wall s | CPU s | peak RSS MB | load 1-min before / after | goal |")
    print("|------|------|--------|-------|-------------|---------------------------|------|")
    if "a" in results:
        print(row("a", f"backtest, {ab}", results["a"], "15 min (900 s)"))
    if "b" in results:
        print(row("b", f"{results['b']['commands'] // 2} x (fit + test), {ab}", results["b"], "a <= b"))
    epochs = args.c_epochs if args.c_epochs is not None else "301"
    folds_c = f"{args.c_folds} folds x {args.c_test_size} days, {epochs} epochs"
    darts = [r for n, r in runs if n == "d"]
    darts_wall = sum(r["wall_s"] for r in darts) / len(darts) if darts else None
    for name, r in runs:
        if name == "c":
            goal = (
                f"<= 0.5x darts: {r['wall_s'] / darts_wall:.2f}x"
                if darts_wall
                else f"<= {DARTS_SECONDS / 2:.0f} s (darts {DARTS_SECONDS:.0f} s, issue 15)"
            )
            what = f"backtest, {folds_c}, {args.c_config.name}, bundled CSV, {args.c_workers} worker(s)"
            print(row("c", what, r, goal))
        elif name == "d":
            s_ = r.get("summary") or {}
            what = f"darts 0.48.1 historical_forecasts, BlockRNNModel GRU, {folds_c}, {s_.get('threads', '?')} threads"
            print(row("d", what, r, ""))
    if "a" in results and "b" in results:
        print(
            f"\nbacktest / separate commands: wall {results['a']['wall_s'] / results['b']['wall_s']:.2f}, "
            f"CPU {results['a']['cpu_s'] / results['b']['cpu_s']:.2f}"
        )
    for part in ("a", "c", "d"):
        s = results.get(part, {}).get("summary") or {}
        if s:
            keys = ("rmse_ratio", "dm_pvalue", "direction_acc", "up_share", "rmse", "naive_rmse", "darts_seconds")
            print(f"{part}: " + ", ".join(f"{k} {s[k]:.4g}" for k in keys if isinstance(s.get(k), (int, float))))


if __name__ == "__main__":
    main()
