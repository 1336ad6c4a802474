"""DailyPricesDataModule: windows, chronological split, the tutorial's numbers, and the scaler in checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    CONFIGS,
    KOSPI_CSV,
    fitted_numbers,
    fitted_scaling_module,
    only_version_dir,
    run_cli,
    write_price_csv,
)

from rnn_lightning import DailyPricesDataModule, RecurrentModel
from rnn_lightning.data.daily import make_windows


def loop_windows(x: np.ndarray, y: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's seq_data: a plain Python loop over rows."""
    xs, ys = [], []
    for i in range(len(x) - sequence_length):
        xs.append(x[i : i + sequence_length])
        ys.append(y[i + sequence_length])
    return np.array(xs), np.array(ys)


@pytest.mark.parametrize("sequence_length", [1, 3, 5])
def test_windows_equal_a_plain_loop(sequence_length: int) -> None:
    values = np.random.default_rng(0).normal(size=(30, 4))
    expected, _ = loop_windows(values, values[:, 0], sequence_length)
    got = make_windows(torch.from_numpy(values), sequence_length).numpy()
    np.testing.assert_array_equal(got, expected)


def test_datamodule_windows_targets_and_split(kospi_csv: Path) -> None:
    dm = DailyPricesDataModule(str(kospi_csv), split=50, val_size=10, scaler_fit="all")
    dm.setup("fit")
    frame = pd.read_csv(kospi_csv)
    columns = ["Open", "High", "Low", "Volume"]
    lo, hi = frame[columns].min().to_numpy(), frame[columns].max().to_numpy()
    scaled = (frame[columns].to_numpy() - lo) / (hi - lo)
    close = frame["Close"].to_numpy()
    scaled_close = (close - close.min()) / (close.max() - close.min())
    x_loop, y_loop = loop_windows(scaled, scaled_close, 5)

    windows = dm.windows()
    assert windows.x.shape == (75, 5, 4) and windows.x.dtype == torch.float64  # raw, in the CSV's units
    np.testing.assert_array_equal(windows.x.numpy(), loop_windows(frame[columns].to_numpy(), close, 5)[0])
    np.testing.assert_array_equal(windows.close.numpy(), close[5:])
    np.testing.assert_array_equal(windows.ref.numpy(), close[4:-1])
    # The model's scaling, fitted by the data module, gives the tutorial's scaled windows and targets.
    scaling = fitted_scaling_module(dm)
    x = scaling.scale_inputs(windows.x, windows.ref)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), x_loop, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scaling.scale_targets(windows.close, windows.ref).numpy(), y_loop, rtol=0, atol=1e-6)
    sizes = {name: len(dm.windows(name).x) for name in ("train", "val", "test")}
    assert sizes == {"train": 40, "val": 10, "test": 25}
    # Chronological: validation follows training, test follows validation.
    assert torch.equal(dm.windows("val").x[0], windows.x[40]) and torch.equal(dm.windows("test").x[0], windows.x[50])


def test_scaler_sees_only_training_rows(tmp_path: Path) -> None:
    """Changing every row after the training part leaves the fitted scaling unchanged."""
    csv = write_price_csv(tmp_path / "a.csv")
    dm = DailyPricesDataModule(str(csv), split=50, val_size=10)
    dm.setup("fit")
    frame = pd.read_csv(csv)
    train_rows = dm.num_train + dm.sequence_length  # 40 windows use rows 0..44
    fitted = fitted_numbers(dm)
    assert fitted["feature_min"] == frame[dm.features][:train_rows].min().tolist()
    assert fitted["feature_max"] == frame[dm.features][:train_rows].max().tolist()
    assert fitted["target_offset"] == [frame["Close"][:train_rows].min()]

    changed = frame.copy()
    changed.loc[train_rows:, ["Open", "High", "Low", "Close", "Adj Close"]] *= 3.0
    changed.loc[train_rows:, "Volume"] *= 5
    changed.to_csv(tmp_path / "b.csv", index=False)
    other = DailyPricesDataModule(str(tmp_path / "b.csv"), split=50, val_size=10)
    other.setup("fit")
    assert fitted_numbers(other) == fitted
    # The tutorial's scaler_fit=all does see them.
    leaky = DailyPricesDataModule(str(tmp_path / "b.csv"), split=50, val_size=10, scaler_fit="all")
    leaky.setup("fit")
    assert fitted_numbers(leaky) != fitted


def test_checkpoint_carries_the_scaler(tmp_path: Path) -> None:
    """test() from a checkpoint scales with the training run's scaler, even if the CSV's rows changed."""
    csv = write_price_csv(tmp_path / "prices.csv")
    dm = DailyPricesDataModule(str(csv), split=50, val_size=10)
    model = RecurrentModel(backbone="gru")
    trainer = pl.Trainer(
        max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    frame = pd.read_csv(csv)
    frame[["Open", "High", "Low", "Close", "Adj Close"]] *= 1.5
    frame.to_csv(tmp_path / "shifted.csv", index=False)
    fresh = DailyPricesDataModule(str(tmp_path / "shifted.csv"), split=50, val_size=10)
    restored = RecurrentModel.load_from_checkpoint(ckpt)
    assert torch.equal(restored.fc.weight, model.fc.weight)
    tester = pl.Trainer(default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    tester.test(restored, datamodule=fresh, ckpt_path=ckpt, verbose=False)
    # The model tested with the training run's scaling, not with one refitted on the shifted rows.
    for name, buffer in model.scaling.state_dict().items():
        assert torch.equal(restored.scaling.state_dict()[name], buffer), name
    assert fitted_numbers(fresh)["feature_min"] != restored.scaling.feature_min.tolist()


def test_tutorial_counts_and_scaled_values() -> None:
    """431 rows -> 426 windows, 200 train / 226 test; MinMax over all rows reproduces the tutorial's df.head()."""
    dm = DailyPricesDataModule(str(KOSPI_CSV), split=200, val_size=0, scaler_fit="all")
    dm.setup("fit")
    assert (len(dm.close), dm.num_windows, dm.num_train, dm.num_windows - dm.num_train) == (431, 426, 200, 226)
    scaling = fitted_scaling_module(dm)
    first = dm.windows(slice(0, 1))
    open_scaled = scaling.scale_inputs(first.x, first.ref)[0, :2, 0]
    np.testing.assert_allclose(open_scaled.numpy(), [0.722898, 0.763058], atol=5e-7)
    close_scaled = scaling.scale_targets(dm.close[:5], dm.close[:5])  # a level target ignores ref
    np.testing.assert_allclose(close_scaled.numpy(), [0.759235, 0.757866, 0.756456, 0.756415, 0.729669], atol=5e-7)


def test_trains_on_the_tutorial_csv(tmp_path: Path) -> None:
    """A short GRU fit on the real CSV: the training loss falls and the price metrics are finite."""
    pl.seed_everything(0)
    dm = DailyPricesDataModule(str(KOSPI_CSV), split=200, val_size=20)
    model = RecurrentModel(backbone="gru", hidden_size=8, num_layers=2)
    trainer = pl.Trainer(
        max_epochs=30,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    losses: list[float] = []

    class Record(pl.Callback):
        # train_loss is logged by the module's on_train_epoch_end, which runs after callbacks' hook.
        def on_train_epoch_start(self, trainer, pl_module):
            if "train_loss" in trainer.callback_metrics:
                losses.append(float(trainer.callback_metrics["train_loss"]))

        def on_train_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["train_loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(model, datamodule=dm)
    assert losses[-1] < losses[0] / 3
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert np.isfinite(result["test_rmse"]) and result["test_naive_rmse"] == pytest.approx(34.0, abs=0.1)


def test_split_too_small_for_the_devices(kospi_csv: Path) -> None:
    """A validation split smaller than the number of DDP ranks is a one-line error, not a traceback."""
    from types import SimpleNamespace

    from rnn_lightning import UserInputError

    dm = DailyPricesDataModule(str(kospi_csv), split=50, val_size=1)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2, current_epoch=0)
    with pytest.raises(UserInputError, match="a split of 1 samples cannot give each of 2 devices one"):
        dm.val_dataloader()


@pytest.mark.parametrize("include_initial", [True, False])
def test_untrained_model_competes_for_best(tmp_path: Path, include_initial: bool) -> None:
    """With include_initial, a model that starts as the naive forecast and then trains badly keeps its
    untrained state (all-zero head, step 0) as the best checkpoint; without it, best is a trained epoch."""
    csv = write_price_csv(tmp_path / "prices.csv")
    root = tmp_path / "runs"
    # lr 5 wrecks the model in its first steps: validation can only get worse than the naive start.
    run_cli(
        "fit",
        "--config",
        CONFIGS / "kospi_gru_returns.yaml",
        "--data.csv_path",
        csv,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--model.lr",
        "5.0",
        "--trainer.max_epochs",
        "2",
        "--plots.enabled",
        "false",
        "--checkpoint.include_initial",
        str(include_initial).lower(),
        "--trainer.default_root_dir",
        root,
    )
    (best_path,) = (only_version_dir(root) / "checkpoints").glob("best-*.ckpt")
    best = torch.load(best_path, weights_only=True)
    head = best["state_dict"]["fc.weight"]
    if include_initial:
        assert best["global_step"] == 0 and torch.count_nonzero(head) == 0
        assert best_path.name == "best-epoch=000-initial.ckpt"
    else:
        assert best["global_step"] > 0 and torch.count_nonzero(head) > 0
