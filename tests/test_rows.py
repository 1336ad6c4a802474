"""Row-sequence images: IDX reading, splits, the offline sample, and the MNIST config through the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CONFIGS,
    MNIST_TEST_DIR,
    make_digits,
    only_version_dir,
    run_cli,
    scalars,
    write_idx,
    write_mnist_dir,
)
from PIL import Image
from torchvision.transforms import ToTensor

from rnn_lightning import RowMNISTDataModule, UserInputError
from rnn_lightning.data import rows
from rnn_lightning.data.rows import read_idx
from rnn_lightning.models.scaling import PixelScaling

MNIST_CONFIG = CONFIGS / "mnist_bilstm.yaml"


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_raw_and_gzip(tmp_path: Path, suffix: str) -> None:
    images, labels = make_digits(12)
    got_images = read_idx(write_idx(tmp_path / f"images{suffix}", images))
    got_labels = read_idx(write_idx(tmp_path / f"labels{suffix}", labels))
    assert got_images.dtype == np.uint8 and got_images.shape == (12, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_truncated_idx_is_a_clear_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", make_digits(4)[0])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserInputError, match="truncated or corrupt IDX file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_batches_are_uint8_rows_and_int64_labels(tmp_path: Path, gz: bool) -> None:
    root = write_mnist_dir(tmp_path, gz=gz, n_train=100, n_test=30)
    dm = RowMNISTDataModule(data_dir=str(root), download=False, val_size=0.2, batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.shape == (16, 28, 28) and batch.x.dtype == torch.uint8  # the model scales them itself
    assert batch.y.shape == (16,) and batch.y.dtype == torch.int64
    sizes = [len(dm.split_tensors(name)[1]) for name in ("train", "val", "test")]
    assert sizes == [80, 20, 30]
    # The model's whole-batch conversion equals torchvision's per-image ToTensor scaling.
    images, labels = dm.split_tensors("test")
    first = next(iter(dm.test_dataloader()))
    to_tensor = ToTensor()(Image.fromarray(images[0].numpy()))[0]  # (28, 28) float32 in [0, 1]
    torch.testing.assert_close(PixelScaling().scale_inputs(first.x)[0], to_tensor, rtol=0, atol=0)
    assert torch.equal(first.y, labels[:16])


def test_fashion_mnist_layout(tmp_path: Path) -> None:
    root = write_mnist_dir(tmp_path, folder="FashionMNIST", n_train=40, n_test=20)
    dm = RowMNISTDataModule(dataset="fashion_mnist", data_dir=str(root), download=False, val_size=0)
    dm.setup("test")
    assert len(dm.split_tensors("test")[1]) == 20


def test_files_directly_in_data_dir(tmp_path: Path) -> None:
    """The IDX files may also lie directly in data_dir (as in Debian's dataset-fashion-mnist)."""
    write_mnist_dir(tmp_path, n_train=30, n_test=10)
    dm = RowMNISTDataModule(data_dir=str(tmp_path / "MNIST" / "raw"), download=False, val_size=0)
    dm.setup("test")
    assert len(dm.split_tensors("test")[1]) == 10


def test_sample_split_is_stratified_and_seeded() -> None:
    dm = RowMNISTDataModule(dataset="mnist_sample", val_size=0.1, test_size=1000, split_seed=3)
    dm.setup("fit")
    counts = {name: np.bincount(dm.split_tensors(name)[1].numpy(), minlength=10) for name in ("train", "val", "test")}
    assert counts["test"].tolist() == [100] * 10
    assert counts["val"].tolist() == [40] * 10
    assert counts["train"].tolist() == [360] * 10
    again = RowMNISTDataModule(dataset="mnist_sample", val_size=0.1, test_size=1000, split_seed=3)
    again.setup("fit")
    assert torch.equal(again.split_tensors("val")[0], dm.split_tensors("val")[0])
    train = {bytes(img.numpy()) for img in dm.split_tensors("train")[0]}
    assert not any(bytes(img.numpy()) in train for img in dm.split_tensors("test")[0])


def test_missing_files_with_download_false(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            MNIST_CONFIG,
            "--data.data_dir",
            tmp_path,
            "--data.download",
            "false",
            "--trainer.default_root_dir",
            tmp_path,
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train-images-idx3-ubyte" in err[0] and "mnist_sample" in err[0], err
    assert str(tmp_path / "MNIST" / "raw") in err[0]


def test_failed_download_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_network(self, data_dir):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(rows.IdxSource, "download", no_network)
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", MNIST_CONFIG, "--data.data_dir", tmp_path, "--trainer.default_root_dir", tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not download mnist" in err[0] and "mnist_sample" in err[0], err
    assert str(tmp_path / "MNIST" / "raw") in err[0]


@pytest.mark.parametrize("backbone", ["bilstm", "gru"])
def test_cli_fit_then_test_from_checkpoint(mnist_dir: Path, tmp_path: Path, backbone: str) -> None:
    root = tmp_path / "runs"
    common = [
        "--config",
        MNIST_CONFIG,
        "--data.data_dir",
        mnist_dir,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        root,
        "--model.backbone",
        backbone,
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "2", "--data.val_size", "40", "--data.batch_size", "32")
    run_dir = only_version_dir(root)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    run_cli("test", *common, "--ckpt_path", run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("progress_bar", ["true", "false"])
def test_cli_fast_dev_run(mnist_dir: Path, tmp_path: Path, progress_bar: str) -> None:
    """The config runs with and without a progress bar (a progress-bar callback in it would clash)."""
    run_cli(
        "fit",
        "--config",
        MNIST_CONFIG,
        "--data.data_dir",
        mnist_dir,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.fast_dev_run",
        "1",
        "--data.val_size",
        "20",
        "--trainer.enable_progress_bar",
        progress_bar,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not (MNIST_TEST_DIR / "t10k-images-idx3-ubyte.gz").is_file(), reason="../shared/data/mnist is absent"
)
def test_sample_model_on_the_official_test_split(tmp_path: Path) -> None:
    """Train briefly on the offline real sample, evaluate on the official 10,000 MNIST test images."""
    fit_root, test_root = tmp_path / "fit", tmp_path / "test"
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run_cli(
        "fit",
        "--config",
        MNIST_CONFIG,
        "--data.dataset",
        "mnist_sample",
        "--data.val_size",
        "0",
        "--data.test_size",
        "0",
        "--trainer.max_epochs",
        "3",
        "--trainer.default_root_dir",
        fit_root,
        *quiet,
    )
    ckpt = only_version_dir(fit_root) / "checkpoints" / "last.ckpt"
    run_cli(
        "test",
        "--config",
        MNIST_CONFIG,
        "--data.dataset",
        "mnist",
        "--data.data_dir",
        MNIST_TEST_DIR,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        test_root,
        "--ckpt_path",
        ckpt,
        *quiet,
    )
    assert scalars(only_version_dir(test_root))["test_acc"][0] > 0.85


def test_bf16_mixed_on_the_cpu(mnist_dir: Path, tmp_path: Path) -> None:
    """``--trainer.precision bf16-mixed`` on a CPU without oneDNN's bf16 LSTM kernel (AVX2-only CPUs, or
    ONEDNN_MAX_CPU_ISA=AVX2) used to end in "could not create a primitive descriptor"; the recurrent layers
    now run in float32 under CPU autocast, with parallel_directions as configured."""
    root = tmp_path / "runs"
    common = [
        "--config",
        MNIST_CONFIG,
        "--data.data_dir",
        mnist_dir,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        root,
        "--trainer.precision",
        "bf16-mixed",
        "--model.hidden_size",
        "6",
        "--plots.enabled",
        "false",
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "1", "--data.val_size", "40", "--data.batch_size", "32")
    run_dir = only_version_dir(root)
    assert all(math.isfinite(v) for v in scalars(run_dir)["train_loss"])
    run_cli("test", *common, "--ckpt_path", run_dir / "checkpoints" / "last.ckpt")
