"""A new user's first day: the bundled KOSPI CSV, the README's main job offline, no advertisements."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import CONFIGS, REPO

from rnn_lightning.data.daily import EXAMPLE_CSV, DailyPricesDataModule

# The tutorial's file as published in ../shared/data/kospi/SOURCES.md: shipped byte for byte.
EXAMPLE_SHA256 = "dbb9f709a311b88dfd58124c6af9e000326e15cd42efd001228b6c3c83dedf92"


def console(args: list[object], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("rnn-lightning")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rnn_lightning"]
    env = {k: v for k, v in os.environ.items() if k != "RNN_LIGHTNING_DEBUG"}
    return subprocess.run(
        [*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_example_csv_is_the_tutorials_file_and_the_default() -> None:
    assert hashlib.sha256(EXAMPLE_CSV.read_bytes()).hexdigest() == EXAMPLE_SHA256
    dm = DailyPricesDataModule()
    dm.setup("fit")
    # 431 rows, 5-day windows: 426 windows, 200 for training (20 of them validate), 226 test days.
    assert (dm.num_windows, dm.num_train + dm.num_val) == (426, 200)
    assert str(dm.dates.iloc[0].date()) == "2019-01-30" and str(dm.dates.iloc[-1].date()) == "2020-10-29"


def test_main_job_runs_offline_from_any_folder_without_tips(tmp_path: Path) -> None:
    """``rnn-lightning fit --config configs/kospi_gru.yaml`` (shortened), then ``test`` on its checkpoint,
    in a folder with nothing beside it: the bundled CSV is read, and Lightning's litlogger/litmodels tips
    are gone while its other messages stay."""
    config = CONFIGS / "kospi_gru.yaml"
    fit = console(["fit", "--config", config, "--trainer.max_epochs", "3"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    output = fit.stdout + fit.stderr
    assert "Tip:" not in output and "litlogger" not in output and "litmodels" not in output
    assert "GPU available:" in output  # Lightning's own messages are kept
    run_dir = tmp_path / "lightning_logs" / "version_0"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    test = console(["test", "--config", config, "--ckpt_path", ckpt], cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test_rmse" in test.stdout and "test_naive_rmse" in test.stdout
    assert "Tip:" not in test.stdout + test.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_example_csv(tmp_path: Path) -> None:
    """``pip install .`` (not editable) installs from the wheel: it must carry the CSV, byte for byte."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("rnn_lightning-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("rnn_lightning/data/examples/kospi_2019.csv")
        assert "rnn_lightning/data/examples/SOURCES.md" in archive.namelist()
    assert hashlib.sha256(data).hexdigest() == EXAMPLE_SHA256
