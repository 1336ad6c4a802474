"""``rnn-lightning tune`` through the real CLI, on tiny synthetic data: outputs, statistics, hold-out, resume, errors.

The statistics in summary.json are recomputed here from losses.csv with arch directly; the hold-out is
checked by changing held-out rows of the CSV; crash safety and PostgreSQL are the slow tests at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import CONFIGS, make_price_frame, run_cli, write_mnist_dir
from postgres import fresh_database

ROOT = Path(__file__).resolve().parent.parent
RETURNS = CONFIGS / "kospi_gru_returns.yaml"
ERROR_PREFIX = "rnn-lightning: error: "


def write_space(path: Path, spec: dict | None = None) -> Path:
    spec = spec or {
        "model.backbone": {"choices": ["rnn", "gru"]},
        "model.hidden_size": {"low": 2, "high": 6},
        "model.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def write_csv(path: Path, rows: int = 120, seed: int = 0) -> Path:
    make_price_frame(rows, seed=seed).to_csv(path, index=False)
    return path


def tune_args(csv: Path, root: Path, space: Path, *extra: object, trials: int = 3) -> list[object]:
    return [
        "tune",
        "--config",
        RETURNS,
        "--data.csv_path",
        csv,
        "--data.split",
        "50",
        "--data.val_size",
        "5",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        root,
        "--tune.space",
        space,
        "--tune.trials",
        str(trials),
        "--tune.holdout",
        "10",
        "--tune.reps",
        "200",
        "--backtest.folds",
        "2",
        "--backtest.test_size",
        "8",
        *extra,
    ]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "lightning_logs").glob("version_*"))


@pytest.fixture
def searched(tmp_path: Path) -> tuple[Path, Path, Path]:
    """One tune run of 3 trials: (run folder, CSV, space)."""
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    run_cli(*tune_args(csv, tmp_path / "runs", space))
    return run_dirs(tmp_path / "runs")[-1], csv, space


def test_tune_writes_every_output(searched: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, csv, _ = searched
    trials = pd.read_csv(run_dir / "trials.csv")
    assert list(trials.columns) == [
        "number",
        "state",
        "model.backbone",
        "model.hidden_size",
        "model.lr",
        "score",
        "dm_pvalue",
        "seconds",
    ]
    assert len(trials) == 3 and set(trials["state"]) <= {"complete", "pruned"}
    assert trials["number"].is_unique
    losses = pd.read_csv(run_dir / "losses.csv", dtype={"date": str})
    complete = trials[trials["state"] == "complete"]
    assert list(losses.columns) == ["date", "naive", *[f"trial_{n}" for n in complete["number"]]]
    # 2 folds x 8 days, the days right before the 10 held-out ones, in the CSV's own order.
    frame = pd.read_csv(csv)
    assert list(losses["date"]) == list(frame["Date"].iloc[-26:-10])
    # The naive forecast's squared error, from the CSV alone.
    close = frame["Close"].to_numpy(np.float64)
    naive = (close[-26:-10] - close[-27:-11]) ** 2
    np.testing.assert_allclose(losses["naive"], naive, rtol=1e-8)
    # Each trial's score is its RMSE ratio over those days, recomputed from losses.csv.
    for row in complete.itertuples():
        column = losses[f"trial_{row.number}"]
        assert row.score == pytest.approx(np.sqrt(column.sum() / losses["naive"].sum()), rel=1e-8)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "best_trial",
        "best_params",
        "best_score",
        "spa_pvalue",
        "spa_pvalue_lower",
        "spa_pvalue_upper",
        "stepm_superior",
        "holdout_rmse_ratio",
        "holdout_dm_pvalue",
        "detectable_ratio",
        "completed",
        "pruned",
        "failed",
        "bootstrap",
    ):
        assert key in summary, key
    assert summary["completed"] + summary["pruned"] == 3 and summary["holdout_days"] == 10
    assert summary["best_score"] == pytest.approx(complete["score"].min())
    holdout = pd.read_csv(run_dir / "holdout.csv", dtype={"date": str})
    assert list(holdout["date"]) == list(frame["Date"].iloc[-10:])
    ratio = np.sqrt(holdout["se"].sum() / holdout["naive_se"].sum())
    assert summary["holdout_rmse_ratio"] == pytest.approx(ratio, rel=1e-8)
    for name in ("optimization_history.png", "best_cumulative_se.png", "best_config.yaml"):
        assert (run_dir / name).is_file(), name
    # TensorBoard's HParams dashboard: a run per finished trial with its parameters and score.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = trials.iloc[0]
    events = EventAccumulator(str(run_dir / "hparams" / f"trial_{int(first['number']):04d}"))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert events.Scalars("tune/score")[0].value == pytest.approx(first["score"], rel=1e-6)
    # The best configuration as a config that fit accepts as it is.
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    assert best["model"]["backbone"] == summary["best_params"]["model.backbone"]
    run_cli("fit", "--config", run_dir / "best_config.yaml", "--trainer.default_root_dir", tmp_path / "refit")
    assert (run_dirs(tmp_path / "refit")[-1] / "checkpoints" / "last.ckpt").is_file()


def test_spa_and_stepm_are_arch_on_losses_csv(searched: tuple[Path, Path, Path]) -> None:
    """summary.json's SPA p-values and StepM set, recomputed with arch from losses.csv and the recorded bootstrap."""
    from arch.bootstrap import SPA, StepM

    run_dir, _, _ = searched
    losses = pd.read_csv(run_dir / "losses.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    boot = summary["bootstrap"]
    naive, models = losses["naive"].to_numpy(), losses.drop(columns=["date", "naive"])
    # Trials that copied the naive forecast day for day are left out (documented in verdict.py).
    models = models.drop(columns=[f"trial_{n}" for n in summary["identical_to_naive"]])
    assert all(not (models[c].to_numpy() == naive).all() for c in models.columns)
    if models.shape[1] == 0:
        assert summary["spa_pvalue"] == 1.0 and summary["stepm_superior"] == []
        return
    spa = SPA(
        naive,
        models,
        block_size=boot["block_size_resolved"],
        reps=boot["reps"],
        bootstrap=boot["bootstrap"],
        seed=boot["seed"],
    )
    spa.compute()
    assert summary["spa_pvalue"] == pytest.approx(float(spa.pvalues["consistent"]), abs=1e-6)
    assert summary["spa_pvalue_lower"] == pytest.approx(float(spa.pvalues["lower"]), abs=1e-6)
    assert summary["spa_pvalue_upper"] == pytest.approx(float(spa.pvalues["upper"]), abs=1e-6)
    step = StepM(
        naive,
        models,
        size=boot["size"],
        block_size=boot["block_size_resolved"],
        reps=boot["reps"],
        bootstrap=boot["bootstrap"],
        seed=boot["seed"],
    )
    try:
        step.compute()
        superior = list(step.superior_models)
    except ValueError:  # arch's StepM fails after finding every trial better (verdict.stepm says why)
        superior = list(models.columns)
    assert summary["stepm_superior"] == sorted(int(c.removeprefix("trial_")) for c in superior)


def test_no_held_out_day_reaches_a_trial(tmp_path: Path) -> None:
    """Change every held-out row of the CSV: each trial's parameters and per-day losses stay identical."""
    space = write_space(tmp_path / "space.yaml")
    first = write_csv(tmp_path / "a.csv")
    frame = pd.read_csv(first)
    changed = frame.copy()
    price_columns = ["Open", "High", "Low", "Close", "Adj Close"]
    changed.loc[changed.index[-10:], price_columns] *= 1.5
    second = tmp_path / "b.csv"
    changed.to_csv(second, index=False)
    for csv, root in ((first, tmp_path / "a"), (second, tmp_path / "b")):
        run_cli(*tune_args(csv, root, space))
    a, b = run_dirs(tmp_path / "a")[-1], run_dirs(tmp_path / "b")[-1]
    pd.testing.assert_frame_equal(pd.read_csv(a / "losses.csv"), pd.read_csv(b / "losses.csv"))
    params = ["number", "state", "model.backbone", "model.hidden_size", "model.lr", "score"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "trials.csv")[params], pd.read_csv(b / "trials.csv")[params])
    # ... while the held-out days themselves did change.
    assert not pd.read_csv(a / "holdout.csv")["actual"].equals(pd.read_csv(b / "holdout.csv")["actual"])


def test_running_again_continues_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    run_cli(*tune_args(csv, tmp_path / "runs", space, trials=2))
    first = pd.read_csv(run_dirs(tmp_path / "runs")[-1] / "trials.csv")
    run_cli(*tune_args(csv, tmp_path / "runs", space, trials=3))
    second = pd.read_csv(run_dirs(tmp_path / "runs")[-1] / "trials.csv")
    assert len(second) == 3
    pd.testing.assert_frame_equal(second.iloc[:2].drop(columns="seconds"), first.drop(columns="seconds"))
    capsys.readouterr()
    # The same study with another space is refused, in one line, before a run folder is made.
    other = write_space(tmp_path / "other.yaml", {"model.hidden_size": {"low": 2, "high": 3}})
    before = run_dirs(tmp_path / "runs")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*tune_args(csv, tmp_path / "runs", other, trials=3))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"study 'kospi_gru_returns' .* was run with another config, space", err)
    assert run_dirs(tmp_path / "runs") == before


@pytest.mark.parametrize(
    ("space", "extra", "match"),
    [
        ({"model.hiden_size": {"low": 2, "high": 4}}, [], r"model.hiden_size=2 is refused"),
        ({"model.hidden_size": {"low": 8, "high": 4}}, [], r"model.hidden_size: low 8 is above high 4"),
        ({"model.backbone": {"choices": ["gru", "transformer"]}}, [], r"model.backbone='transformer' is refused"),
        ({"model.dropout": {"low": 0.0, "high": 1.5}}, [], r"model.dropout=1.5 is refused: dropout must lie in"),
        ({"model.lr": {"low": 0.0, "high": 0.1, "log": True}}, [], r"a log range needs low > 0"),
        (None, ["--tune.trials", "0"], r"tune.trials must be a positive integer, got 0"),
        (None, ["--tune.workers", "2", "--num_threads", "2"], r"tune.workers > 1 needs --num_threads 1"),
        (None, ["--tune.holdout", "115"], r"tune.holdout 115 leaves no window to tune on"),
        (None, ["--tune.holdout", "105"], r"backtest.folds x backtest.test_size = 2 x 8 = 16 test windows leave"),
        (
            None,
            ["--tune.storage", "postgresql+psycopg2://tuner:s3cret@127.0.0.1:9/nowhere"],
            r"tune.storage postgresql\+psycopg2://tuner:\*\*\*@127.0.0.1:9/nowhere cannot be opened",
        ),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], space: dict | None, extra: list[str], match: str
) -> None:
    csv = write_csv(tmp_path / "prices.csv")
    space_file = write_space(tmp_path / "space.yaml", space)
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*tune_args(csv, root, space_file, *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1, err
    assert re.search(match, lines[0]), lines[0]
    assert "s3cret" not in err and "Traceback" not in err
    assert not run_dirs(root)


def test_images_are_tuned_on_validation_and_tested_once(tmp_path: Path) -> None:
    data = write_mnist_dir(tmp_path / "mnist", n_train=120, n_test=40)
    space = write_space(tmp_path / "space.yaml", {"model.hidden_size": {"low": 2, "high": 4}})
    run_cli(
        "tune",
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.data_dir",
        data,
        "--data.download",
        "false",
        "--data.batch_size",
        "32",
        "--model.parallel_directions",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        tmp_path / "runs",
        "--tune.space",
        space,
        "--tune.trials",
        "2",
    )
    run_dir = run_dirs(tmp_path / "runs")[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 2 and summary["objective"] == "val_loss"
    assert summary["best_score"] == pytest.approx(trials["score"].min())
    assert 0.0 <= summary["test_metrics"]["test_acc"] <= 1.0
    assert not (run_dir / "losses.csv").exists()


def test_a_trial_that_yields_its_slot_prints_no_traceback() -> None:
    """Two processes racing for the last slot: the later trial yields (Surplus) silently; real failures still log."""
    import io
    import logging

    import optuna

    from rnn_lightning.tune import quota

    # A handler of Optuna's library logger, as its default stderr handler is (whichever stream that holds).
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study()

        def surplus(trial: optuna.Trial) -> float:
            raise quota.Surplus(f"trial {trial.number}: the 1 trials are finished or running elsewhere")

        def broken(trial: optuna.Trial) -> float:
            raise ValueError("boom")

        with quota.surplus_unlogged():
            study.optimize(surplus, n_trials=1, catch=(quota.Surplus,))
        assert stream.getvalue() == ""
        with quota.surplus_unlogged():
            study.optimize(broken, n_trials=1, catch=(ValueError,))
        assert "boom" in stream.getvalue() and "Traceback" in stream.getvalue()  # other failures log as before
        stream.seek(0)
        stream.truncate()
        study.optimize(surplus, n_trials=1, catch=(quota.Surplus,))  # outside the block: Optuna's own lines
        assert "Surplus" in stream.getvalue()
    finally:
        logger.removeHandler(handler)
        optuna.logging.set_verbosity(level)


# --- crash safety and a shared database (slow: real processes) -----------------------------------------------


def _command(csv: Path, root: Path, space: Path, *extra: object, trials: int = 4) -> list[str]:
    # 40 epochs: a trial lasts seconds, so the kill tests can see one finished while another runs (with 4 a
    # whole search could end between two looks of the poller).
    args = tune_args(csv, root, space, "--tune.heartbeat", "1", "--trainer.max_epochs", "40", *extra, trials=trials)
    return [sys.executable, "-m", "rnn_lightning", *map(str, args)]


def _study(url: str, name: str = "kospi_gru_returns"):  # noqa: ANN202
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def _finished(study) -> list:  # noqa: ANN001
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def _kill_after_first_trial(command: list[str], url: str, timeout: float = 240.0) -> tuple[int, dict]:
    """Start ``command``, wait until one trial is finished and another is running, then SIGKILL its process group."""
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                study = _study(url)
            except Exception:  # not created yet
                continue
            trials = study.get_trials()
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING"]
            if done and running:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                # What the storage holds now that every process is dead: a trial may have finished between
                # the look above and the kill, so the killed ones are those still RUNNING.
                after = _study(url).get_trials()
                killed = [t.number for t in after if t.state.name == "RUNNING"]
                if not killed:
                    raise AssertionError("the kill came between two trials; nothing was running")
                return killed[0], {t.number: t.params for t in after if t.state.name == "COMPLETE"}
        raise AssertionError("no trial finished in time")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_a_killed_search_loses_nothing_it_finished(tmp_path: Path) -> None:
    """SIGKILL in the middle of a trial, then the same command: 4 finished trials, the earlier ones among them."""
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    root = tmp_path / "runs"
    url = f"sqlite:///{(root / 'kospi_gru_returns.optuna.db').resolve()}"
    command = _command(csv, root, space, "--tune.workers", "2")  # the parent and both workers are killed
    killed, done = _kill_after_first_trial(command, url)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=600)
    study = _study(url)
    finished = {t.number: t.params for t in _finished(study)}
    assert len(finished) == 4
    assert all(finished.get(number) == params for number, params in done.items())
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[killed] == "FAIL"
    assert len(pd.read_csv(run_dirs(root)[-1] / "trials.csv").query("state != 'failed'")) == 4


@pytest.mark.slow
def test_two_processes_share_one_study_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """Two tune commands at once against a real PostgreSQL server: exactly 4 finished trials between them."""
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    commands = [_command(csv, tmp_path / f"m{i}", space, "--tune.storage", postgres_url) for i in (1, 2)]
    processes = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, text=True) for c in commands]
    outs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outs
    study = _study(postgres_url)
    finished = _finished(study)
    numbers = [t.number for t in study.get_trials()]
    assert len(finished) == 4 and len(numbers) == len(set(numbers))
    for trial in finished:
        if trial.state.name == "COMPLETE":
            assert len(trial.user_attrs["se"]) == 16 and len(trial.user_attrs["naive_se"]) == 16
    assert all("tune: trial" in out for out in outs)  # both machines ran trials
    assert "s3cret" not in "".join(outs) and postgres_url.split(":")[2].split("@")[0] not in "".join(outs)


@pytest.mark.slow
def test_a_killed_worker_on_postgres_is_retried(tmp_path: Path, postgres_url: str) -> None:
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    command = _command(csv, tmp_path / "runs", space, "--tune.storage", postgres_url)
    killed, done = _kill_after_first_trial(command, postgres_url)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=600)
    study = _study(postgres_url)
    finished = {t.number: t.params for t in _finished(study)}
    assert len(finished) == 4 and all(finished.get(n) == p for n, p in done.items())
    assert {t.number: t.state.name for t in study.get_trials()}[killed] == "FAIL"


def _start_together(commands: list[list[str]], cwd: Path) -> list[subprocess.Popen[str]]:
    """Start every command at once: each waits on one barrier file, then runs (all import torch first)."""
    gate = cwd / "go"
    wrapper = (
        "import os, runpy, sys, time\n"
        "gate = sys.argv.pop(1)\n"
        "import torch, lightning, optuna, sqlalchemy  # the slow imports before the gate, so all open at once\n"
        "while not os.path.exists(gate):\n"
        "    time.sleep(0.005)\n"
        "runpy.run_module('rnn_lightning', run_name='__main__')\n"
    )
    processes = [
        subprocess.Popen(
            [c[0], "-c", wrapper, str(gate), *c[3:]],  # c = [python, -m, rnn_lightning, args...]
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in commands
    ]
    time.sleep(8.0 if len(commands) > 2 else 4.0)  # the imports
    gate.touch()
    return processes


@pytest.mark.slow
def test_processes_started_together_on_fresh_postgres_databases_all_run(tmp_path: Path, postgres_url: str) -> None:
    """A job array's start: 4 processes open one empty database at the same instant, on 3 fresh databases.

    Without the start-up lock, two of them create Optuna's tables at once and one stops with PostgreSQL's
    catalogue violation (``pg_type_typname_nsp_index``).
    """
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    rounds = int(os.environ.get("RNNL_STARTUP_ROUNDS", "3"))
    for r in range(rounds):
        url = fresh_database(postgres_url, f"together_{r}")
        commands = [
            [
                sys.executable,
                "-m",
                "rnn_lightning",
                *map(
                    str,
                    tune_args(
                        csv, tmp_path / f"r{r}m{i}", space, "--tune.storage", url, "--tune.heartbeat", "1", trials=3
                    ),
                ),
            ]
            for i in range(4)
        ]
        round_dir = tmp_path / f"round{r}"
        round_dir.mkdir()
        processes = _start_together(commands, round_dir)
        outs = [p.communicate(timeout=600)[0] for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0, 0], "\n---\n".join(outs)
        assert not any("Traceback" in out for out in outs), "\n---\n".join(outs)
        study = _study(url)
        numbers = [t.number for t in study.get_trials()]
        assert len(_finished(study)) == 3 and len(numbers) == len(set(numbers))


@pytest.mark.slow
def test_processes_started_together_share_one_sqlite_study(tmp_path: Path) -> None:
    """Two terminals, one command, the same instant, the embedded SQLite file: both exit 0, 4 trials, none lost."""
    csv = write_csv(tmp_path / "prices.csv")
    space = write_space(tmp_path / "space.yaml")
    root = tmp_path / "runs"
    commands = [_command(csv, root, space, "--trainer.max_epochs", "1") for _ in range(2)]
    processes = _start_together(commands, tmp_path)
    outs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n---\n".join(outs)
    assert not any("Traceback" in out for out in outs), "\n---\n".join(outs)
    study = _study(f"sqlite:///{(root / 'kospi_gru_returns.optuna.db').resolve()}")
    numbers = [t.number for t in study.get_trials()]
    assert len(_finished(study)) == 4 and len(numbers) == len(set(numbers))
    assert not [t.number for t in study.get_trials() if t.state.name == "RUNNING"]
