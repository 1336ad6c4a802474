"""The real CLI on every KOSPI config: fit, then test from the run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, events, run_cli, scalars, write_price_csv

from rnn_lightning.models import RecurrentModel

KOSPI_CONFIGS = sorted(CONFIGS.glob("kospi_*.yaml"))
T, SPLIT, VAL = 5, 50, 10  # window length (configs/base/kospi.yaml), --data.split, --data.val_size
FIT_ROWS = SPLIT - VAL + T  # the rows the 40 training windows use, inputs and targets: the scaling's rows


def config_settings(config: Path) -> dict:
    """The config's dotted keys over configs/base/kospi.yaml's, flattened: ``{"model.head": ..., ...}``."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            name = prefix + key
            out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
        return out

    settings = flat(yaml.safe_load((CONFIGS / "base" / "kospi.yaml").read_text()))
    settings.update(flat(yaml.safe_load(config.read_text())))
    return settings


def independent_forecast(frame: pd.DataFrame, settings: dict, ckpt: Path, windows: range) -> np.ndarray:
    """The checkpoint's point forecasts of ``windows`` with the scaling fitted here, from the CSV alone.

    Min-max inputs over the first FIT_ROWS rows; target ``level`` min-max over the same rows' closes, or
    ``log_return`` divided by the RMS of the training windows' log returns. Only the network is the project's.
    """
    close = frame["Close"].to_numpy(np.float64)
    log_return = np.concatenate([[0.0], np.log(close[1:] / close[:-1])])
    features = settings["data.init_args.features"]
    raw = np.stack([log_return if f == "LogReturn" else frame[f].to_numpy(np.float64) for f in features], axis=1)
    low, high = raw[:FIT_ROWS].min(axis=0), raw[:FIT_ROWS].max(axis=0)
    x = np.stack([(raw[i : i + T] - low) / (high - low) for i in windows])  # (W, T, F)
    model = RecurrentModel.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x).float()).double().numpy().reshape(-1)
    ref = close[np.array(windows) + T - 1]
    if settings.get("data.init_args.target_transform", "level") == "log_return":
        scale = np.sqrt(np.mean(log_return[T:FIT_ROWS] ** 2))
        return ref * np.exp(out * scale)
    train_close = close[:FIT_ROWS]
    return out * (train_close.max() - train_close.min()) + train_close.min()


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

    last = run_dir / "checkpoints" / "last.ckpt"
    run_cli(
        "test",
        *common,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--ckpt_path",
        last,
    )
    logged = {k: v[0] for k, v in scalars(root / "lightning_logs" / "version_1").items()}
    assert {"test_loss", "test_rmse", "test_mae", "test_mape", "test_naive_rmse"} <= logged.keys()

    # The test period from the CSV alone: 75 windows, 50 before the split, so windows 50..74 predict rows
    # 55..79; the naive forecast is the previous row's close.
    frame = pd.read_csv(kospi_csv)
    close = frame["Close"].to_numpy(np.float64)
    actual, naive = close[SPLIT + T :], close[SPLIT + T - 1 : -1]
    assert len(actual) == 25
    assert logged["test_naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - actual) ** 2)), rel=1e-6)

    # predict with the same checkpoint: its test rows are the test step's forecasts, row by row.
    run_cli("predict", *common, "--data.split", SPLIT, "--data.val_size", VAL, "--ckpt_path", last)
    (predictions,) = root.glob("lightning_logs/version_2/predictions.csv")
    rows = pd.read_csv(predictions)
    test = rows[rows["split"] == "test"]
    assert list(test["date"]) == list(frame["Date"].iloc[SPLIT + T :])
    assert np.allclose(test["actual_close"], actual, rtol=0, atol=1e-6)
    assert np.allclose(test["naive_close"], naive, rtol=0, atol=1e-6)
    predicted = test["predicted_close"].to_numpy()
    error = predicted - actual
    assert logged["test_rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-5)
    assert logged["test_mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
    assert logged["test_mape"] == pytest.approx(np.mean(np.abs(error) / np.abs(actual)), rel=1e-5)
    assert not np.allclose(predicted, naive, rtol=0, atol=1e-3)  # the model's, not the naive forecast

    # test_loss: the head's loss in scaled target units, with the scaling fitted here from the CSV.
    settings = config_settings(config)
    returns = settings.get("data.init_args.target_transform", "level") == "log_return"
    rms = np.sqrt(np.mean(np.log(close[T:FIT_ROWS] / close[T - 1 : FIT_ROWS - 1]) ** 2))
    low, high = close[:FIT_ROWS].min(), close[:FIT_ROWS].max()

    def scaled(price: np.ndarray) -> np.ndarray:
        return np.log(price / naive) / rms if returns else (price - low) / (high - low)

    if settings.get("model.head") == "quantile":
        levels = np.array(settings["model.quantiles"])
        assert np.allclose(test["predicted_close"], test["q0.5_close"])  # the median
        quantiles = np.stack([scaled(test[f"q{q:g}_close"].to_numpy()) for q in levels], axis=1)  # (25, Q)
        miss = scaled(actual)[:, None] - quantiles
        expected_loss = np.mean(np.maximum(levels * miss, (levels - 1) * miss))
    else:
        expected_loss = np.mean((scaled(predicted) - scaled(actual)) ** 2)
        # The network's forecasts with inputs scaled here: the predictions are the checkpoint's model's.
        mine = independent_forecast(frame, settings, last, range(SPLIT, SPLIT + 25))
        assert np.allclose(predicted, mine, rtol=1e-6, atol=1e-5)
    assert logged["test_loss"] == pytest.approx(expected_loss, rel=1e-4)


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
