"""Plots and predictions.csv through the real CLI: fit, test and predict on tiny synthetic data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, events, make_digits, run_cli, scalars
from PIL import Image

from rnn_lightning.models.module import RecurrentModel

KOSPI_DATA = ["--data.split", "50", "--data.val_size", "10"]


def tags(run_dir: Path) -> dict[str, list]:
    return {"images": events(run_dir, images=0).Tags()["images"], "scalars": scalars(run_dir)}


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def test_kospi_plots_and_predictions(kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "runs"
    common = [
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--trainer.default_root_dir",
        root,
        *KOSPI_DATA,
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "2")
    ckpt = run_dirs(root)[0] / "checkpoints" / "last.ckpt"
    run_cli("test", *common, "--ckpt_path", ckpt)
    run_cli("predict", *common, "--ckpt_path", ckpt)
    fit_dir, test_dir, predict_dir = run_dirs(root)

    assert (fit_dir / "prediction_fit.png").stat().st_size > 10_000
    assert tags(fit_dir)["images"] == ["plots/prediction_fit"]
    # TensorBoard shows the very picture written beside it: the same pixels, from the same drawing.
    (logged,) = events(fit_dir, images=0).Images("plots/prediction_fit")
    png = Image.open(fit_dir / "prediction_fit.png")
    shown = Image.open(io.BytesIO(logged.encoded_image_string))
    assert (logged.width, logged.height, png.mode) == (*png.size, "RGB")
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(png))
    assert (test_dir / "prediction_test.png").is_file()
    test_tags = tags(test_dir)
    assert test_tags["images"] == ["plots/prediction_test"]
    assert (predict_dir / "prediction_predict.png").is_file()

    csv = predict_dir / "predictions.csv"
    assert f"wrote 76 rows to {csv}" in capsys.readouterr().out
    table = pd.read_csv(csv)
    assert list(table.columns) == ["date", "actual_close", "predicted_close", "naive_close", "split"]
    # 80 rows - 5 days per window = 75 windows: 40 train, 10 val, 25 test, then tomorrow.
    assert table["split"].value_counts().to_dict() == {"train": 40, "val": 10, "test": 25, "forecast": 1}
    assert list(table["split"].iloc[[0, 39, 40, 49, 50, 74, 75]]) == [
        "train",
        "train",
        "val",
        "val",
        "test",
        "test",
        "forecast",
    ]
    prices = pd.read_csv(kospi_csv)
    assert list(table["date"][:-1]) == list(prices["Date"][5:])
    tomorrow = pd.Timestamp(prices["Date"].iloc[-1]) + pd.offsets.BDay(1)
    assert table["date"].iloc[-1] == tomorrow.strftime("%Y-%m-%d")
    np.testing.assert_allclose(table["actual_close"][:-1], prices["Close"][5:], atol=1e-6)
    assert np.isnan(table["actual_close"].iloc[-1])
    np.testing.assert_allclose(table["naive_close"], prices["Close"][4:], atol=1e-6)

    # The predicted closes are the checkpoint's outputs over every window, then tomorrow's (last 5 rows):
    # the model alone, without a Trainer or data module, turns raw windows of the CSV into prices.
    model = RecurrentModel.load_from_checkpoint(ckpt).eval()
    features = prices[["Open", "High", "Low", "Volume"]].to_numpy(np.float64)
    closes = prices["Close"].to_numpy(np.float64)
    starts = range(len(prices) - 5 + 1)  # every window, the last one being tomorrow's
    x = torch.tensor(np.stack([features[i : i + 5] for i in starts]))  # (W + 1, 5, 4) in the CSV's units
    ref = torch.tensor([closes[i + 4] for i in starts])
    with torch.no_grad():
        expected = model.scaling.to_price(model(model.scaling.scale_inputs(x, ref)).reshape(-1), ref)
    np.testing.assert_allclose(table["predicted_close"], expected.numpy(), rtol=1e-5)

    # The CSV's test rows give the RMSE that `test` logged for the same checkpoint.
    test_rows = table[table["split"] == "test"]
    rmse = np.sqrt(np.mean((test_rows["predicted_close"] - test_rows["actual_close"]) ** 2))
    naive = np.sqrt(np.mean((test_rows["naive_close"] - test_rows["actual_close"]) ** 2))
    assert rmse == pytest.approx(test_tags["scalars"]["test_rmse"][0], rel=1e-4)
    assert naive == pytest.approx(test_tags["scalars"]["test_naive_rmse"][0], rel=1e-4)


def test_mnist_plots_and_predictions(mnist_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    common = [
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.data_dir",
        mnist_dir,
        "--data.download",
        "false",
        "--data.val_size",
        "20",
        "--data.batch_size",
        "60",
        "--model.hidden_size",
        "6",
        "--model.num_layers",
        "1",
        "--trainer.default_root_dir",
        root,
        "--trainer.max_epochs",
        "2",
    ]
    run_cli("fit", *common)
    ckpt = run_dirs(root)[0] / "checkpoints" / "last.ckpt"
    run_cli("test", *common, "--ckpt_path", ckpt)
    run_cli("predict", *common, "--ckpt_path", ckpt)
    fit_dir, test_dir, predict_dir = run_dirs(root)

    table = pd.read_csv(predict_dir / "predictions.csv")
    assert list(table.columns) == ["index", "predicted", "actual", *(f"p{k}" for k in range(10))]
    _, labels = make_digits(60, seed=1)  # conftest's t10k split
    assert list(table["index"]) == list(range(60))
    assert list(table["actual"]) == labels.tolist()
    probabilities = table[[f"p{k}" for k in range(10)]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(table["predicted"]) == probabilities.argmax(axis=1).tolist()

    any_wrong = bool((table["predicted"] != table["actual"]).any())
    for run_dir, stage in ((fit_dir, "fit"), (test_dir, "test"), (predict_dir, "predict")):
        assert (run_dir / f"confusion_matrix_{stage}.png").is_file()
        assert f"plots/confusion_matrix_{stage}" in tags(run_dir)["images"]
    # Test and predict judge the same images with the same checkpoint: the grid exists iff a digit is wrong.
    assert (test_dir / "misclassified_test.png").is_file() == any_wrong
    assert ("plots/misclassified_test" in tags(test_dir)["images"]) == any_wrong


def test_plots_and_writer_can_be_turned_off(kospi_csv: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    common = [
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--trainer.default_root_dir",
        root,
        *KOSPI_DATA,
        "--plots.enabled",
        "false",
        "--predictions.enabled",
        "false",
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "1")
    run_cli("predict", *common, "--ckpt_path", run_dirs(root)[0] / "checkpoints" / "last.ckpt")
    for run_dir in run_dirs(root):
        assert not list(run_dir.glob("*.png")) and not list(run_dir.glob("*.csv"))
        assert tags(run_dir)["images"] == []


def test_negative_max_images_is_a_one_line_error(kospi_csv: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            CONFIGS / "kospi_gru.yaml",
            "--data.csv_path",
            kospi_csv,
            "--trainer.default_root_dir",
            tmp_path,
            "--plots.max_images",
            "-1",
        )
    assert exit_info.value.code == 2
    assert "plots.max_images must be an int >= 0, got -1" in capsys.readouterr().err
