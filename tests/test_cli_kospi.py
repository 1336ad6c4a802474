"""The real CLI on every KOSPI config: fit, then test from the run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONFIGS, events, run_cli, scalars, write_price_csv

KOSPI_CONFIGS = sorted(CONFIGS.glob("kospi_*.yaml"))


@pytest.mark.parametrize("config", KOSPI_CONFIGS, ids=lambda p: p.stem)
def test_fit_then_test_from_checkpoint(config: Path, kospi_csv: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    common = ["--config", config, "--data.csv_path", kospi_csv, "--trainer.default_root_dir", root]
    run_cli("fit", *common, "--trainer.max_epochs", "2", "--data.split", "50", "--data.val_size", "10")
    run_dir = root / "lightning_logs" / "version_0"
    assert (run_dir / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    fit_scalars = scalars(run_dir)
    assert {"train_loss", "val_loss", "val_rmse"} <= fit_scalars.keys()
    assert len(fit_scalars["train_loss"]) == 2

    run_cli(
        "test",
        *common,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--ckpt_path",
        run_dir / "checkpoints" / "last.ckpt",
    )
    test_scalars = scalars(root / "lightning_logs" / "version_1")
    expected = {"test_loss", "test_rmse", "test_mae", "test_mape", "test_naive_rmse"}
    assert expected <= test_scalars.keys()
    assert all(v[0] == v[0] and v[0] >= 0 for k, v in test_scalars.items() if k in expected)


@pytest.mark.parametrize("config", KOSPI_CONFIGS, ids=lambda p: p.stem)
def test_fast_dev_run(config: Path, tmp_path: Path) -> None:
    """Each config as shipped (split 200, val 20) on a CSV as long as the tutorial's."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=431)
    run_cli(
        "fit",
        "--config",
        config,
        "--data.csv_path",
        csv,
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.fast_dev_run",
        "1",
    )


def test_refit_into_existing_folder(kospi_csv: Path, tmp_path: Path) -> None:
    """A second run whose log folder already holds a config.yaml must not fail."""
    args = [
        "fit",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--data.split",
        "50",
        "--trainer.max_epochs",
        "1",
        "--trainer.logger.class_path",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.init_args.save_dir",
        tmp_path,
        "--trainer.logger.init_args.version",
        "fixed",
    ]
    run_cli(*args)
    run_cli(*args)
    assert (tmp_path / "lightning_logs" / "fixed" / "config.yaml").is_file()


def test_validation_every_tenth_epoch_and_after_the_last(kospi_csv: Path, tmp_path: Path) -> None:
    """The tutorial configs validate every 10th epoch (cheap epochs, costly validation) and always after the
    final one, so a run shorter than the period still picks a best checkpoint."""
    root = tmp_path / "runs"
    run_cli(
        "fit",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--trainer.max_epochs",
        "12",
        "--plots.enabled",
        "false",
        "--trainer.default_root_dir",
        root,
    )
    run_dir = root / "lightning_logs" / "version_0"
    batches = 2  # 40 training windows, batch 20
    val_steps = [e.step for e in events(run_dir, scalars=0).Scalars("val_loss")]
    assert val_steps == [10 * batches - 1, 12 * batches - 1]  # after epochs 10 and 12 (the last)
    assert [p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt")] != []
