"""Forecast distributions on the bundled KOSPI CSV over several seeds, next to the naive distribution.

A config (default ``configs/kospi_gru_quantile.yaml``) is trained as shipped through the real CLI
(``rnn_lightning.cli.main`` in-process: ``fit``, then ``test`` from the run's best checkpoint), once per
seed; only the seed, the output folder and any ``--set`` overrides change. The test scalars are read back
from TensorBoard, so the numbers are the ones a user sees: the central interval's coverage and width, the
pinball loss (and CRPS for the Gaussian head) of the model and of the naive distribution, and the RMSE of
the median. Prints a Markdown table of mean ± standard deviation (min–max) over the seeds.

Run from the repository root (how long a seed takes: docs/performance.md)::

    python benchmarks/kospi_distribution.py                       # 5 seeds, 42..46, the quantile config
    python benchmarks/kospi_distribution.py --set model.head=gaussian
    python benchmarks/kospi_distribution.py --set data.init_args.horizon=5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The same in-process CLI run and TensorBoard reading as the point-forecast quality table (same folder).
from kospi_quality import last_scalars, quiet_cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "kospi_gru_quantile.yaml"
# (model scalar, naive scalar, label, format) per table column; CRPS only where the head logs it.
COLUMNS = (
    ("test_coverage", "test_naive_coverage", "coverage", "{:.3f}"),
    ("test_width", "test_naive_width", "width (points)", "{:.1f}"),
    ("test_pinball", "test_naive_pinball", "pinball (points)", "{:.3f}"),
    ("test_crps", "test_naive_crps", "CRPS (points)", "{:.3f}"),
    ("test_rmse", "test_naive_rmse", "RMSE (points)", "{:.2f}"),
)


def run_one(config: Path, seed: int, root: Path, overrides: list[str]) -> dict[str, float]:
    """Fit with ``seed``, test the best checkpoint, return the test scalars."""
    common = ["--config", str(config), "--trainer.default_root_dir", str(root), "--seed_everything", str(seed)]
    common += [f"--{item}" for item in overrides]
    quiet_cli(["fit", *common])
    best = sorted((root / "lightning_logs" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    if len(best) != 1:
        raise RuntimeError(f"{root}: expected one best-*.ckpt, found {[p.name for p in best]}")
    quiet_cli(["test", *common, "--ckpt_path", str(best[0])])
    return last_scalars(root / "lightning_logs" / "version_1")


def spread(values: list[float], fmt: str) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{fmt.format(statistics.mean(values))} ± {fmt.format(std)} ({fmt.format(min(values))}–"
        f"{fmt.format(max(values))})"
    )


def markdown_table(runs: list[dict[str, float]]) -> str:
    columns = [c for c in COLUMNS if all(c[0] in r for r in runs)]
    rows = ["| | " + " | ".join(c[2] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows.append("| model | " + " | ".join(spread([r[c[0]] for r in runs], c[3]) for c in columns) + " |")
    # The naive distribution is fitted on the training windows only: the same for every seed.
    rows.append("| naive | " + " | ".join(c[3].format(statistics.mean(r[c[1]] for r in runs)) for c in columns) + " |")
    return "\n".join(rows)


def run(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 42, 43, ... (default 5)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra CLI override for every run, e.g. model.head=gaussian (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    runs = []
    with tempfile.TemporaryDirectory(prefix="kospi_distribution_") as scratch:
        for seed in range(42, 42 + args.seeds):
            start = time.perf_counter()
            scalars = run_one(args.config, seed, Path(scratch) / f"seed{seed}", args.overrides)
            runs.append(scalars)
            print(
                f"seed {seed}: coverage {scalars['test_coverage']:.3f} (naive {scalars['test_naive_coverage']:.3f})"
                f"  pinball {scalars['test_pinball']:.3f} (naive {scalars['test_naive_pinball']:.3f})"
                f"  ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    extra = f", overrides {' '.join(args.overrides)}" if args.overrides else ""
    print(f"\n{args.seeds} seed(s) of {args.config.name} on the bundled KOSPI CSV{extra}\n")
    print(markdown_table(runs))
    return runs


if __name__ == "__main__":
    run()
