"""Tourism monthly's results table (docs/panels.md, issue 31 item 7): mean test MASE per config and seed.

Each row is a config of ``configs/tourism_*.yaml`` with a backbone and a member count; each seed is one
``rnn-lightning fit`` (the config as shipped: settings chosen on the validation window, then refit on every
series' whole training part for the chosen epoch count) and one ``rnn-lightning test`` on its
``last.ckpt``, which forecasts the competition's test part once. The mean test MASE over the 366 series is
read from the test run's ``series_metrics.csv``; the seasonal naive forecast's from the same file. Runs
one fit at a time (the configs' ``num_threads``); a row's seeds run one after another.

    python benchmarks/tourism_results.py --rows gru:1 lstm:1 rnn:1 gru:10 --seeds 1 2 3 --out table.md

A row is ``backbone:members`` (``configs/tourism_monthly.yaml`` with ``--model.backbone``) or
``path.yaml:members``. The markdown table (mean, spread as min-max and sample std, each seed's value and
the command) goes to ``--out`` and stdout; each run's folder stays under ``--root``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

CONFIG = "configs/tourism_monthly.yaml"


def row_args(row: str) -> tuple[str, list[str], str]:
    """(config, extra CLI arguments, label) of a ``backbone:members`` or ``config.yaml:members`` row."""
    what, _, members = row.partition(":")
    members = members or "1"
    extra = ["--model.members", members]
    if what.endswith(".yaml"):
        return what, extra, f"{Path(what).stem}, {members} member(s)"
    return CONFIG, ["--model.backbone", what, *extra], f"{what.upper()}, {members} member(s)"


def run(command: list[str], log: Path) -> float:
    """Run ``command`` with its output in ``log``; its wall time in seconds. A failure stops the table."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    return time.perf_counter() - start


def one_seed(config: str, extra: list[str], seed: int, root: Path) -> dict[str, float]:
    """Fit and test one seed; its mean test MASE and the seasonal naive's, from ``series_metrics.csv``."""
    root.mkdir(parents=True, exist_ok=True)
    base = ["rnn-lightning", "--config", config, f"--seed_everything={seed}", *extra]
    fit = [base[0], "fit", *base[1:], "--trainer.default_root_dir", str(root / "fit")]
    seconds = run(fit, root / "fit.log")
    ckpt = next((root / "fit").glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    test = [base[0], "test", *base[1:], "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root / "test")]
    run(test, root / "test.log")
    metrics = pd.read_csv(next((root / "test").glob("lightning_logs/version_*/series_metrics.csv")))
    return {"mase": float(metrics["mase"].mean()), "snaive": float(metrics["snaive_mase"].mean()), "s": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["gru:1", "lstm:1", "rnn:1", "gru:10", "lstm:10", "rnn:10"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--root", type=Path, default=Path("tourism_results"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    lines = [
        "| config | mean test MASE | spread (min-max; std) | seeds | fit s/seed | command |",
        "|---|---|---|---|---|---|",
    ]
    snaive: float | None = None
    for row in args.rows:
        config, extra, label = row_args(row)
        scores = []
        for seed in args.seeds:
            name = row.replace("/", "_").replace(":", "_m")
            result = one_seed(config, extra, seed, args.root / f"{name}_s{seed}")
            scores.append(result)
            snaive = result["snaive"]
            print(f"{label} seed {seed}: test MASE {result['mase']:.3f} ({result['s']:.0f} s)", flush=True)
        values = [r["mase"] for r in scores]
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        each = ", ".join(f"{v:.3f}" for v in values)
        seconds = statistics.mean(r["s"] for r in scores)
        command = f"`rnn-lightning fit --config {config} {' '.join(extra)} --seed_everything S`"
        lines.append(
            f"| {label} | {statistics.mean(values):.3f} | {min(values):.3f}-{max(values):.3f}; {std:.3f} "
            f"| {each} | {seconds:.0f} | {command} |"
        )
    if snaive is not None:
        lines.append(
            f"| seasonal naive (same code, same points) | {snaive:.3f} | | | | (every test run's `test_snaive_mase`) |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
