"""Forecast quality of every shipped KOSPI config, over several seeds, next to the naive forecast.

Each config is trained exactly as shipped through the real CLI (``rnn_lightning.cli.main`` in-process:
``fit``, then ``test`` from the run's best checkpoint, ``checkpoints/best-*.ckpt``), once per seed; only
the CSV path, the seed and the output folder are overridden. The test scalars are read back from the
run's TensorBoard events, so the numbers are the ones a user sees. The result is a Markdown table of
test RMSE (index points), test RMSE / naive and directional accuracy, each as mean, standard deviation
and min–max over the seeds, with the naive "tomorrow = today's close" row beside them.

Run from the repository root (how long a run takes: docs/performance.md; the default 3 seeds over the
shipped configs take a few minutes)::

    python benchmarks/kospi_quality.py                      # every configs/kospi_*.yaml, seeds 42, 43, 44
    python benchmarks/kospi_quality.py --seeds 5 --configs configs/kospi_gru_returns.yaml
    python benchmarks/kospi_quality.py --set model.weight_decay=1e-3   # try a change without a new file
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnn_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/kospi/kospi_2019.csv"
TEST_SCALARS = ("test_rmse", "test_naive_rmse", "test_direction_acc", "test_mae")
# Logged by ensembles (--set model.members=N) and the distribution heads only: extra columns when present.
OPTIONAL_SCALARS = (
    "test_coverage",
    "test_width",
    "test_naive_coverage",
    "test_member_rmse_mean",
    "test_member_rmse_sd",
)


@dataclass
class RunResult:
    config: str
    seed: int
    best_checkpoint: str
    best_epoch: int
    test_rmse: float
    test_naive_rmse: float
    test_direction_acc: float
    test_mae: float
    seconds: float
    optional: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.test_rmse / self.test_naive_rmse


def last_scalars(run_dir: Path) -> dict[str, float]:
    """The last value of every scalar in a run folder's TensorBoard events."""
    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def quiet_cli(args: list[str]) -> None:
    """``rnn-lightning ARGS`` in-process, with Lightning's banner lines and warnings silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        main(args)


def run_one(config: Path, seed: int, data: str, root: Path, overrides: list[str]) -> RunResult:
    """Fit ``config`` with ``seed``, then test its best checkpoint; return the test scalars."""
    start = time.perf_counter()
    common = ["--config", str(config), "--data.csv_path", data, "--trainer.default_root_dir", str(root)]
    common += [f"--{item}" if "=" in item else item for item in overrides]
    quiet_cli(["fit", *common, "--seed_everything", str(seed)])
    fit_dir = root / "lightning_logs" / "version_0"
    best = sorted((fit_dir / "checkpoints").glob("best-*.ckpt"))
    if len(best) != 1:
        raise RuntimeError(f"{fit_dir}: expected one best-*.ckpt, found {[p.name for p in best]}")
    quiet_cli(["test", *common, "--seed_everything", str(seed), "--ckpt_path", str(best[0])])
    scalars = last_scalars(root / "lightning_logs" / "version_1")
    missing = [name for name in TEST_SCALARS if name not in scalars]
    if missing:
        raise RuntimeError(f"{config.name} seed {seed}: the test run logged no {', '.join(missing)}")
    # best-epoch=NNN, or best-epoch=000-initial when the untrained model scored best (include_initial)
    epoch = int(best[0].stem.split("=")[-1].split("-")[0])
    return RunResult(
        config=config.stem,
        seed=seed,
        best_checkpoint=best[0].name,
        best_epoch=epoch,
        seconds=time.perf_counter() - start,
        optional={name: float(scalars[name]) for name in OPTIONAL_SCALARS if name in scalars},
        **{name: float(scalars[name]) for name in TEST_SCALARS},
    )


def spread(values: list[float], fmt: str) -> str:
    """``mean ± std (min–max)``; the std is the sample standard deviation (0 for one run)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{fmt.format(statistics.mean(values))} ± {fmt.format(std)} ({fmt.format(min(values))}–"
        f"{fmt.format(max(values))})"
    )


# Optional columns: (scalar, header, format), shown when every run logged the scalar.
OPTIONAL_COLUMNS = (
    ("test_member_rmse_mean", "members' own RMSE", "{:.2f}"),
    ("test_coverage", "interval coverage", "{:.3f}"),
    ("test_width", "interval width (points)", "{:.1f}"),
)


def markdown_table(results: list[RunResult]) -> str:
    """One row per config, plus the naive forecast's row (identical for every config and seed)."""
    optional = [c for c in OPTIONAL_COLUMNS if all(c[0] in r.optional for r in results)]
    header = "| config | seeds | test RMSE (points) | RMSE / naive | directional accuracy | best epoch (median) |"
    header += "".join(f" {title} |" for _, title, _ in optional)
    rows = [header, "|---" * (6 + len(optional)) + "|"]
    configs = list(dict.fromkeys(r.config for r in results))
    for name in configs:
        runs = [r for r in results if r.config == name]
        rows.append(
            f"| `{name}` | {len(runs)} | {spread([r.test_rmse for r in runs], '{:.2f}')} "
            f"| {spread([r.ratio for r in runs], '{:.4f}')} "
            f"| {spread([r.test_direction_acc for r in runs], '{:.3f}')} "
            f"| {statistics.median(r.best_epoch for r in runs):g} |"
            + "".join(f" {spread([r.optional[key] for r in runs], fmt)} |" for key, _, fmt in optional)
        )
    naive = {round(r.test_naive_rmse, 3) for r in results}
    naive_text = " / ".join(f"{value:.2f}" for value in sorted(naive))
    naive_cells = {
        "test_coverage": "{:.3f}".format(
            statistics.mean(r.optional.get("test_naive_coverage", float("nan")) for r in results)
        ),
    }
    rows.append(
        f"| naive (tomorrow = today's close) | – | {naive_text} | 1.0000 | – | – |"
        + "".join(f" {naive_cells.get(key, '–')} |" for key, _, _ in optional)
    )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"KOSPI CSV (default {DEFAULT_DATA})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per config: 42, 43, ... (default 3)")
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=None,
        help="configs to train (default: every configs/kospi_*.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra CLI override for every run, e.g. model.weight_decay=1e-3 (repeatable)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if not Path(args.data).is_file():
        parser.error(f"{args.data}: no such file (pass the KOSPI CSV with --data)")
    return args


def run(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    configs = args.configs or sorted((REPO / "configs").glob("kospi_*.yaml"))
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    results: list[RunResult] = []
    with contextlib.ExitStack() as stack:
        scratch = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="kospi_quality_"))
        workdir = Path(scratch)
        for config in configs:
            for seed in range(42, 42 + args.seeds):
                root = workdir / config.stem / f"seed{seed}"
                result = run_one(config, seed, args.data, root, args.overrides)
                results.append(result)
                print(
                    f"{result.config:<24} seed {seed}: test RMSE {result.test_rmse:7.2f}  "
                    f"naive {result.test_naive_rmse:6.2f}  ratio {result.ratio:.3f}  "
                    f"direction {result.test_direction_acc:.3f}  best epoch {result.best_epoch:3d}  "
                    f"({result.seconds:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in results], indent=2))
    extra = f", overrides {' '.join(args.overrides)}" if args.overrides else ""
    print(f"\n{args.seeds} seed(s) per config on {args.data}{extra}\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    run()
