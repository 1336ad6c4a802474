"""The CLI's Trainer defaults: a progress bar that redraws by the clock and a no-op profiler that costs
nothing; a bar or profiler the user configures, or no bar, is respected."""

from __future__ import annotations

import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
from helpers import CONFIGS, run_cli
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.profilers import SimpleProfiler

from rnn_lightning import UserInputError
from rnn_lightning.cli import RnnLightningCLI
from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.profiling import NoProfiler
from rnn_lightning.progress import PacedProgressBar


def build_cli(kospi_csv: Path, root: Path, *extra: str) -> RnnLightningCLI:
    return RnnLightningCLI(
        RecurrentModel,
        InMemoryDataModule,
        subclass_mode_data=True,
        run=False,
        # The KOSPI configs turn the bar off (epochs of ~25 ms); turned back on here.
        args=["--config", str(CONFIGS / "kospi_gru.yaml"), "--data.csv_path", str(kospi_csv),
              "--data.split", "50", "--data.val_size", "10", "--trainer.default_root_dir", str(root),
              "--trainer.enable_progress_bar", "true", *extra],
    )


def test_default_bar_is_paced(kospi_csv: Path, tmp_path: Path) -> None:
    cli = build_cli(kospi_csv, tmp_path)
    bars = [c for c in cli.trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == 1 and type(bars[0]) is PacedProgressBar
    assert bars[0].min_interval == 0.1


def test_configured_bar_and_disabled_bar_are_kept(kospi_csv: Path, tmp_path: Path) -> None:
    cli = build_cli(kospi_csv, tmp_path, "--trainer.callbacks+=TQDMProgressBar",
                    "--trainer.callbacks.refresh_rate=7")
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 7
    cli = build_cli(kospi_csv, tmp_path, "--trainer.enable_progress_bar", "false")
    assert cli.trainer.progress_bar_callback is None


def drawn_counts(output: str, total: int) -> list[int]:
    """The batch counts the training bar showed, in order (``Epoch 0:  40%|...| 4/10 ...``)."""
    return [int(n) for n in re.findall(rf"Epoch 0:[^|]*\|[^|]*\| (\d+)/{total}\b", output)]


@pytest.mark.parametrize(("min_interval", "expect_every_batch"), [(0.0, True), (3600.0, False)])
def test_bar_redraws_by_the_clock_and_always_ends_full(
    kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture, min_interval: float, expect_every_batch: bool
) -> None:
    data = KospiDataModule(csv_path=str(kospi_csv), batch_size=4, split=60, val_size=0)  # 15 batches
    model = RecurrentModel(hidden_size=4, num_layers=1)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
                         callbacks=[PacedProgressBar(min_interval=min_interval)])
    trainer.fit(model, data)
    total = trainer.num_training_batches
    assert total >= 10
    counts = sorted({n for n in drawn_counts(capsys.readouterr().out, total) if n})  # 0: the bar opening
    assert counts[-1] == total  # the last batch is always drawn
    if expect_every_batch:
        assert counts == list(range(1, total + 1))
    else:
        # Within one hour: the first batch (the clock starts unset) and the last one only.
        assert counts == [1, total]


def test_negative_interval_is_refused(kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserInputError, match="min_interval must be >= 0 seconds, got -1"):
        PacedProgressBar(min_interval=-1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", CONFIGS / "kospi_gru.yaml", "--data.csv_path", kospi_csv,
                "--trainer.default_root_dir", tmp_path, "--trainer.enable_progress_bar", "true",
                "--trainer.callbacks+=rnn_lightning.progress.PacedProgressBar", "--trainer.callbacks.min_interval=-1")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rnn-lightning: error: progress bar min_interval must be >= 0 seconds, got -1.0"]


def test_default_profiler_is_free_and_a_configured_one_is_kept(kospi_csv: Path, tmp_path: Path) -> None:
    cli = build_cli(kospi_csv, tmp_path)
    profiler = cli.trainer.profiler
    assert type(profiler) is NoProfiler
    with profiler.profile("[Callback]x.on_train_batch_end") as inside:  # what every hook call does
        assert inside is None
    assert profiler.profile("a") is profiler.profile("b")  # one shared context, nothing built per call
    cli = build_cli(kospi_csv, tmp_path, "--trainer.profiler", "simple")
    assert type(cli.trainer.profiler) is SimpleProfiler

