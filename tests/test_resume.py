"""A fit killed at any moment resumes from ``last.ckpt``: next epoch, continuing steps, same scaler, same folder.

The slow test is the real thing: an ``rnn-lightning fit`` process killed with SIGKILL as soon as a
``last.ckpt`` exists, then resumed. The quick tests cover the same bookkeeping without a process, and a
crash in the middle of writing a checkpoint.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, events, only_version_dir, run_cli, write_price_csv

from rnn_lightning import checkpointing
from rnn_lightning.data.daily import DailyPricesDataModule


def fit_args(csv: Path, root: Path, max_epochs: int, split: int, *extra: object) -> list[object]:
    return [
        "fit",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        csv,
        "--trainer.default_root_dir",
        root,
        "--data.split",
        split,
        "--data.val_size",
        "20",
        "--trainer.max_epochs",
        max_epochs,
        "--trainer.check_val_every_n_epoch",
        "1",
        "--plots.enabled",
        "false",
        *extra,
    ]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def event_scalars(event_file: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar in one TensorBoard event file, i.e. one process's run."""
    loaded = events(event_file, scalars=0)
    return {tag: [(e.step, e.value) for e in loaded.Scalars(tag)] for tag in loaded.Tags()["scalars"]}


def event_files(run_dir: Path) -> list[Path]:
    """The run's event files, one per process, in the order of the steps they logged (their names hold a
    time in whole seconds, which ties when a quick fit and its resumption start within one second)."""

    def first_step(path: Path) -> int:  # "epoch" is logged with every logged step
        return min(step for step, _ in event_scalars(path)["epoch"])

    return sorted(run_dir.glob("events.out.tfevents.*"), key=first_step)


def bump_first_volume(csv: Path) -> None:
    """Change a training row, so scaling refitted on the file would differ from the checkpoint's."""
    frame = pd.read_csv(csv)
    frame.loc[0, "Volume"] = frame["Volume"].max() * 10
    frame.to_csv(csv, index=False)


def fresh_scaling(csv: Path, split: int) -> list[float]:
    """The input scaling a fit on ``csv`` would fit now: per-column minima, then spans."""
    dm = DailyPricesDataModule(str(csv), split=split, val_size=20)
    dm.setup("fit")
    fitted = dm.fitted_scaling()
    return fitted["feature_min"].tolist() + (fitted["feature_max"] - fitted["feature_min"]).tolist()


def saved_scaling(checkpoint: dict) -> list[float]:
    """The input scaling the model carries in a checkpoint: per-column minima, then spans."""
    state = checkpoint["state_dict"]
    return state["scaling.feature_min"].tolist() + state["scaling.feature_span"].tolist()


def epoch_end_steps(epochs: list[int], batches: int) -> list[int]:
    """The TensorBoard step of each epoch's epoch-level scalars: Lightning logs them at the epoch's last
    optimizer step, counted from 0, so an uninterrupted run logs epoch k at ``(k + 1) * batches - 1``."""
    return [(epoch + 1) * batches - 1 for epoch in epochs]


def check_resumed_run(run_dir: Path, resumed_from: dict, max_epochs: int, batches: int) -> None:
    """The run that resumed after epoch ``resumed_from['epoch']`` logged every later epoch once, in order."""
    first = resumed_from["epoch"] + 1
    final = load(run_dir / "checkpoints" / "last.ckpt")
    assert final["epoch"] == max_epochs - 1
    assert final["global_step"] == max_epochs * batches
    # The scaling came from the checkpoint, not from refitting on the (changed) CSV.
    assert saved_scaling(final) == saved_scaling(resumed_from)

    resumed = event_scalars(event_files(run_dir)[-1])
    epochs = list(range(first, max_epochs))
    steps = epoch_end_steps(epochs, batches)
    # "epoch" is logged with every logged step; the resumed process logged no step it had already done.
    assert sorted({int(v) for _, v in resumed["epoch"]}) == epochs
    assert min(s for s, _ in resumed["epoch"]) >= resumed_from["global_step"], resumed["epoch"]
    for tag in ("train_loss", "val_loss", "val_rmse"):
        assert [s for s, _ in resumed[tag]] == steps, tag
        assert all(math.isfinite(v) for _, v in resumed[tag]), tag
    assert not list(run_dir.rglob("*.partial"))


def test_resume_continues_epochs_steps_and_folder(tmp_path: Path) -> None:
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)  # 75 windows: 30 train (2 batches), 20 val
    root = tmp_path / "runs"
    run_cli(*fit_args(csv, root, 2, 50))
    run_dir = only_version_dir(root)
    after_two = load(run_dir / "checkpoints" / "last.ckpt")
    assert (after_two["epoch"], after_two["global_step"]) == (1, 4)

    bump_first_volume(csv)
    assert fresh_scaling(csv, 50) != saved_scaling(after_two)
    run_cli(*fit_args(csv, root, 4, 50, "--ckpt_path", run_dir / "checkpoints" / "last.ckpt"))

    assert only_version_dir(root) == run_dir  # no version_1: the resumed epochs joined their run
    # ... by a logger made for this process only; the saved config stays what the user gave.
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"].get("logger") is None
    first_run, _ = event_files(run_dir)
    assert [s for s, _ in event_scalars(first_run)["train_loss"]] == epoch_end_steps([0, 1], batches=2)
    check_resumed_run(run_dir, after_two, max_epochs=4, batches=2)  # epochs 2, 3 at steps 5, 7
    # The checkpoint callback's state came back too: it refreshed last.ckpt rather than starting last-v1.ckpt.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("last*")) == ["last.ckpt"]


def test_configured_logger_gets_a_new_folder(tmp_path: Path) -> None:
    """With a logger of one's own, Lightning's behaviour stands: the resumed fit logs where it says."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    root = tmp_path / "runs"
    run_cli(*fit_args(csv, root, 1, 50))
    ckpt = only_version_dir(root) / "checkpoints" / "last.ckpt"
    run_cli(
        *fit_args(
            csv,
            root,
            2,
            50,
            "--ckpt_path",
            ckpt,
            "--trainer.logger.class_path",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            tmp_path / "csv",
        )
    )
    assert (tmp_path / "csv" / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert load(tmp_path / "csv" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_crash_while_saving_keeps_the_previous_last_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that dies half-written (disk full, kill) leaves the previous, loadable last.ckpt in place."""
    original_save = torch.save
    crashing = []

    def save(checkpoint: dict, *args, **kwargs) -> None:
        if checkpoint["epoch"] >= 1:
            crashing.append(True)  # the file write of this checkpoint will be torn
        original_save(checkpoint, *args, **kwargs)

    class TornFile(io.FileIO):
        def write(self, data) -> int:
            if crashing:
                super().write(bytes(data)[:1000])  # only the start of the zip reaches the file
                raise RuntimeError("simulated crash while writing a checkpoint")
            return super().write(data)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    monkeypatch.setattr(checkpointing, "open", lambda path, mode: TornFile(path, mode), raising=False)
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(*fit_args(csv, tmp_path / "runs", 3, 50))
    monkeypatch.undo()
    checkpoints = only_version_dir(tmp_path / "runs") / "checkpoints"
    assert load(checkpoints / "last.ckpt")["epoch"] == 0
    assert list(checkpoints.glob(".*.partial"))  # the torn bytes went to the temporary file only


def test_last_ckpt_is_rewritten_in_place_and_top_k_files_stay(kospi_csv: Path, tmp_path: Path) -> None:
    """last.ckpt is a whole checkpoint of the latest epoch, next to the top-k files; a resume refreshes it
    in place (not as last-v1.ckpt) and leaves the earlier top-k files as they were."""
    root = tmp_path / "runs"
    keep_all = ("--checkpoint.save_top_k", "-1")  # every epoch is a top-k checkpoint
    run_cli(*fit_args(kospi_csv, root, 3, 50, *keep_all))
    checkpoints = only_version_dir(root) / "checkpoints"
    last = checkpoints / "last.ckpt"
    saved = load(last)
    assert (saved["epoch"], saved["global_step"]) == (2, 6)
    assert load(checkpoints / "best-epoch=002.ckpt")["global_step"] == 6

    run_cli(*fit_args(kospi_csv, root, 4, 50, *keep_all, "--ckpt_path", last))
    assert sorted(p.name for p in checkpoints.glob("last*")) == ["last.ckpt"]
    assert load(last)["epoch"] == 3
    assert load(checkpoints / "best-epoch=003.ckpt")["epoch"] == 3
    assert load(checkpoints / "best-epoch=002.ckpt")["epoch"] == 2


def test_normal_run_leaves_no_partial_files(kospi_csv: Path, tmp_path: Path) -> None:
    run_cli(*fit_args(kospi_csv, tmp_path / "runs", 3, 50))
    checkpoints = only_version_dir(tmp_path / "runs") / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".")) == []
    assert load(checkpoints / "last.ckpt")["epoch"] == 2  # refreshed every epoch, not only on improvement


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path: Path) -> None:
    """A real ``rnn-lightning fit`` process, SIGKILLed once it has written last.ckpt, resumes to the end."""
    max_epochs, split = 25, 200  # 300 rows: 295 windows, 180 train windows = 9 batches of 20 per epoch
    csv = write_price_csv(tmp_path / "prices.csv", rows=300)
    root = tmp_path / "runs"
    script = Path(sys.executable).with_name("rnn-lightning")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rnn_lightning"]
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with open(tmp_path / "fit.log", "w") as log:
        process = subprocess.Popen(
            [*command, *map(str, fit_args(csv, root, max_epochs, split))], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 300
            # Kill in the middle of the run, a few epochs in (each save replaces last.ckpt atomically, so
            # reading it while the process runs is safe).
            while process.poll() is None and time.monotonic() < deadline:
                if last.exists() and load(last)["epoch"] >= 2:
                    os.kill(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
        finally:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (tmp_path / "fit.log").read_text()[-3000:]

    killed = load(last)  # whatever moment the kill came, last.ckpt is whole
    assert killed["epoch"] < max_epochs - 1
    assert killed["global_step"] == (killed["epoch"] + 1) * 9

    bump_first_volume(csv)
    assert fresh_scaling(csv, split) != saved_scaling(killed)
    run_cli(*fit_args(csv, root, max_epochs, split, "--ckpt_path", last))
    run_dir = only_version_dir(root)
    check_resumed_run(run_dir, killed, max_epochs=max_epochs, batches=9)
    # The killed process's scalars end where the resumed ones begin (or overlap by the epochs it logged
    # after its last save, which the resumed run recomputes); nothing is missing in between.
    killed_epochs = {int(v) for _, v in event_scalars(event_files(run_dir)[0]).get("epoch", [])}
    assert set(range(killed["epoch"] + 1)) <= killed_epochs
