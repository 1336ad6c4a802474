"""Time the project's ``Trainer.fit`` against the tutorial's plain PyTorch loops, side by side.

Two workloads, each with the tutorial's own data, model and hyperparameters:

* ``kospi``: the GRU (``nn.GRU(4, 8, 2)`` + ``Linear(40, 1)``, Adam 1e-3, MSE) for 301 epochs on the
  first 200 five-day windows of ``kospi_2019.csv``, batch 20. The tutorial's loop: MinMax scaling
  fitted on all rows, ``TensorDataset`` + ``DataLoader(batch_size=20, shuffle=True)`` and
  ``loss.item()`` every step. The project: ``configs/kospi_gru.yaml`` as shipped (180 training and
  20 validation windows, validation every 10th epoch and after the last, ``last.ckpt`` every epoch).
* ``bilstm``: one epoch of the row-sequence Bi-LSTM (``nn.LSTM(28, 12, 2, bidirectional=True)`` +
  ``Linear(672, 10)``, Adam 5e-3, cross-entropy, batch 128, shuffle) over the 60,000 Fashion-MNIST
  training images. The tutorial's loop: a dataset that turns each image into a PIL image and through
  torchvision's ``ToTensor`` (what ``torchvision.datasets.FashionMNIST(transform=ToTensor())`` does)
  behind ``DataLoader(batch_size=128, shuffle=True)``. The project: ``configs/mnist_bilstm.yaml``
  with ``--data.val_size 0``, so that it, too, trains on all 60,000 images.

Threads: each side uses the machine as it is written to. The tutorial's loop keeps torch's default
(one intra-op thread per core), as the tutorial ran. The project's configs set ``num_threads: 1``, and
the Bi-LSTM config's ``parallel_directions`` runs each layer's forward direction on a second thread,
so on a 2-core CPU both sides may use both cores; the per-run lines show each side's CPU seconds
beside its wall time. ``--tutorial-threads 1`` pins the tutorial to one thread instead, the setting
of the README's earlier rows.

Each measurement runs in its own child process (so that its peak resident memory, ``ru_maxrss``, is
its own), and the two sides alternate ``--repeats`` times; the medians and their ratio are printed.
Timed: reading the data and training, i.e. the tutorial's script from ``read_csv``/IDX decoding to its
last step, and the project's ``cli.trainer.fit(cli.model, cli.datamodule)`` (which reads the data in
``setup``). Not timed: interpreter start-up, imports, building the CLI. Checkpoints and TensorBoard
logs go to a temporary folder that is deleted afterwards.

Run from the repository root::

    python benchmarks/bench_speed.py                      # both workloads, 3 alternations each
    python benchmarks/bench_speed.py --only kospi --repeats 5
    python benchmarks/bench_speed.py --accelerator gpu    # on a GPU machine: samples/s per side

``--accelerator gpu`` runs both loops on CUDA (the tutorial's moves every batch to the device, as it
does; the project's Trainer uses ``accelerator=gpu, devices=1``) and also reports samples per second
and peak CUDA memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KOSPI_CSV = REPO / "rnn_lightning" / "data" / "examples" / "kospi_2019.csv"  # the bundled tutorial CSV
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

KOSPI_EPOCHS = 301
BILSTM_EPOCHS = 1
# Targets of issue 6: project time / tutorial time.
TARGETS = {"kospi": 1.0, "bilstm": 0.65}


# ---------------------------------------------------------------------------------------------------
# The tutorial's loops, written its way.
# ---------------------------------------------------------------------------------------------------


def _seed(seed: int = 42) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tutorial_kospi(csv_path: Path, device: str) -> int:
    """The tutorial's KOSPI GRU: returns the number of training samples seen."""
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.preprocessing import MinMaxScaler
    from torch import nn, optim

    df = pd.read_csv(csv_path)
    scaler = MinMaxScaler()
    df[["Open", "High", "Low", "Close", "Volume"]] = scaler.fit_transform(
        df[["Open", "High", "Low", "Close", "Volume"]]
    )
    X = df[["Open", "High", "Low", "Volume"]].values
    y = df["Close"].values

    def seq_data(x, y, sequence_length):
        x_seq, y_seq = [], []
        for i in range(len(x) - sequence_length):
            x_seq.append(x[i : i + sequence_length])
            y_seq.append(y[i + sequence_length])
        x_seq, y_seq = np.asarray(x_seq), np.asarray(y_seq)
        return torch.FloatTensor(x_seq).to(device), torch.FloatTensor(y_seq).to(device).view([-1, 1])

    split, sequence_length = 200, 5
    x_seq, y_seq = seq_data(X, y, sequence_length)
    x_train_seq, y_train_seq = x_seq[:split], y_seq[:split]
    train = torch.utils.data.TensorDataset(x_train_seq, y_train_seq)
    train_loader = torch.utils.data.DataLoader(dataset=train, batch_size=20, shuffle=True)

    class GRU(nn.Module):
        def __init__(self, input_size, hidden_size, sequence_length, num_layers, device):
            super().__init__()
            self.device = device
            self.hidden_size = hidden_size
            self.num_layers = num_layers
            self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size * sequence_length, 1)

        def forward(self, x):
            h0 = torch.zeros(self.num_layers, x.size()[0], self.hidden_size).to(self.device)
            out, _ = self.gru(x, h0)  # (B, T, H)
            out = out.reshape(out.shape[0], -1)  # (B, T*H)
            return self.fc(out)

    model = GRU(4, 8, sequence_length, 2, device).to(device)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    loss_graph, n, seen = [], len(train_loader), 0
    for _epoch in range(KOSPI_EPOCHS):
        running_loss = 0.0
        for seq, target in train_loader:
            out = model(seq)
            loss = criterion(out, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            seen += len(seq)
        loss_graph.append(running_loss / n)
    return seen


def read_idx_gz(path: Path):
    """An IDX file of unsigned bytes (gzip) as a numpy array, as torchvision's reader returns it."""
    import numpy as np

    data = gzip.open(path, "rb").read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def tutorial_bilstm(fashion_dir: Path, device: str) -> int:
    """The tutorial's row-sequence Bi-LSTM, one epoch: returns the number of training samples seen."""
    import torch
    from PIL import Image
    from torch import nn
    from torchvision import transforms

    class FashionMNIST(torch.utils.data.Dataset):
        """What ``torchvision.datasets.FashionMNIST(train=True, transform=ToTensor())`` does per item."""

        def __init__(self, root: Path, transform) -> None:
            self.data = torch.from_numpy(read_idx_gz(root / "train-images-idx3-ubyte.gz").copy())
            self.targets = torch.from_numpy(read_idx_gz(root / "train-labels-idx1-ubyte.gz").astype("int64"))
            self.transform = transform

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, index: int):
            img, target = self.data[index], int(self.targets[index])
            img = Image.fromarray(img.numpy(), mode="L")
            return self.transform(img), target

    train_dataset = FashionMNIST(fashion_dir, transforms.ToTensor())
    train_loader = torch.utils.data.DataLoader(dataset=train_dataset, batch_size=128, shuffle=True)
    sequence_length, input_size, hidden_size, num_layers, num_classes = 28, 28, 12, 2, 10

    class BiLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(hidden_size * 2 * sequence_length, num_classes)

        def forward(self, x):
            h0 = torch.zeros(num_layers * 2, x.size(0), hidden_size).to(device)
            c0 = torch.zeros(num_layers * 2, x.size(0), hidden_size).to(device)
            out, _ = self.lstm(x, (h0, c0))  # (B, T, 2H)
            out = out.reshape(out.shape[0], -1)  # (B, T*2H)
            return self.fc(out)

    model = BiLSTM().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    seen = 0
    for _epoch in range(BILSTM_EPOCHS):
        for images, labels in train_loader:
            images = images.reshape(-1, sequence_length, input_size).to(device)
            labels = labels.to(device)
            outputs = model(images)
            loss = criterion(outputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _ = loss.item()  # the tutorial prints it every 100 steps; .item() every step is its habit
            seen += len(images)
    return seen


# ---------------------------------------------------------------------------------------------------
# The project, through its real command line.
# ---------------------------------------------------------------------------------------------------


def project_args(workload: str, args: argparse.Namespace, root: str) -> list[str]:
    common = ["--trainer.default_root_dir", root, *shlex.split(args.project_args)]
    if args.accelerator == "gpu":
        common += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    if workload == "kospi":
        return [
            "--config",
            str(REPO / "configs" / "kospi_gru.yaml"),
            "--data.csv_path",
            str(args.kospi_csv),
            "--trainer.max_epochs",
            str(KOSPI_EPOCHS),
            *common,
        ]
    return [
        "--config",
        str(REPO / "configs" / "mnist_bilstm.yaml"),
        "--data.dataset",
        "fashion_mnist",
        "--data.data_dir",
        str(args.fashion_dir),
        "--data.download",
        "false",
        "--data.val_size",
        "0",
        "--trainer.max_epochs",
        str(BILSTM_EPOCHS),
        *common,
    ]


def project_fit(workload: str, args: argparse.Namespace) -> tuple[float, float, int, bool]:
    """Build the run as ``rnn-lightning fit`` does (the run factory), then time only ``trainer.fit``.

    Returns wall and CPU seconds, samples trained on, and whether a second thread ran the directions.
    """
    from rnn_lightning import runs

    with tempfile.TemporaryDirectory(prefix="bench_speed_") as root:
        config = runs.prepare_process(runs.parse_args(project_args(workload, args, root)))
        run = runs.build(config, "fit")
        start, cpu = time.perf_counter(), time.process_time()
        with runs.quiet_warnings():
            run.trainer.fit(run.model, datamodule=run.datamodule)
        _sync(args.accelerator)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        samples = run.datamodule.train_dataloader().num_samples * run.trainer.current_epoch
        backbone = run.model.backbone
        helper = backbone.parallel_directions and backbone.bidirectional and args.accelerator == "cpu"
    return seconds, cpu, samples, helper


def _sync(accelerator: str) -> None:
    if accelerator == "gpu":
        import torch

        torch.cuda.synchronize()


def run_child(side: str, workload: str, args: argparse.Namespace) -> dict:
    import torch

    device = "cuda" if args.accelerator == "gpu" else "cpu"
    if side == "tutorial":
        if args.tutorial_threads:
            torch.set_num_threads(args.tutorial_threads)
        _seed()
        fn: Callable[[], int] = (
            (lambda: tutorial_kospi(args.kospi_csv, device))
            if workload == "kospi"
            else (lambda: tutorial_bilstm(args.fashion_dir, device))
        )
        start, cpu = time.perf_counter(), time.process_time()
        samples = fn()
        _sync(args.accelerator)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        helper = False
    else:
        seconds, cpu, samples, helper = project_fit(workload, args)
    threads = f"{torch.get_num_threads()}" + (" + 1 for directions" if helper else "")
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "samples": samples,
        "threads": threads,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.accelerator == "gpu":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# ---------------------------------------------------------------------------------------------------
# The parent: alternate the sides in child processes, print medians and ratios.
# ---------------------------------------------------------------------------------------------------


def measure(side: str, workload: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        side,
        "--only",
        workload,
        "--accelerator",
        args.accelerator,
        "--kospi-csv",
        str(args.kospi_csv),
        "--fashion-dir",
        str(args.fashion_dir),
        "--project-args",
        args.project_args,
        "--tutorial-threads",
        str(args.tutorial_threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench_speed: the {side} {workload} run failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["kospi", "bilstm"], help="one workload (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations per workload (default 3)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--kospi-csv", type=Path, default=DEFAULT_KOSPI_CSV)
    parser.add_argument("--fashion-dir", type=Path, default=DEFAULT_FASHION_DIR)
    parser.add_argument(
        "--project-args",
        default="",
        help="extra rnn-lightning arguments for the project side, e.g. '--plots.enabled false', to measure "
        "what one setting costs",
    )
    parser.add_argument(
        "--tutorial-threads",
        type=int,
        default=0,
        help="torch threads of the tutorial's loop; default 0 keeps torch's default, as the tutorial ran; "
        "1 pins it to one thread",
    )
    parser.add_argument("--child", choices=["tutorial", "project"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.only, args)))
        return
    missing = [p for p in (args.kospi_csv, args.fashion_dir / "train-images-idx3-ubyte.gz") if not p.exists()]
    if args.only:
        missing = [p for p in missing if ("kospi" in str(p).lower()) == (args.only == "kospi")]
    if missing:
        raise SystemExit(f"bench_speed: missing data: {', '.join(map(str, missing))}")
    if args.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench_speed: --accelerator gpu, but torch sees no CUDA device")

    threads = args.tutorial_threads or "torch's default"
    print(
        f"bench_speed: {cpu_name()}, {os.cpu_count()} CPUs, accelerator={args.accelerator}, "
        f"{args.repeats} alternations, tutorial threads: {threads}",
        flush=True,
    )
    workloads = [args.only] if args.only else ["kospi", "bilstm"]
    summary = []
    for workload in workloads:
        runs: dict[str, list[dict]] = {"tutorial": [], "project": []}
        for i in range(args.repeats):
            # Alternate which side goes first, so that neither always meets the same background load.
            order = ("tutorial", "project") if i % 2 == 0 else ("project", "tutorial")
            for side in order:
                result = measure(side, workload, args)
                runs[side].append(result)
                print(
                    f"  {workload:6s} {side:8s} run {i + 1}: {result['seconds']:7.2f} s  "
                    f"(CPU {result['cpu_seconds']:6.2f} s)  {result['samples'] / result['seconds']:8.0f} samples/s  "
                    f"maxrss {result['maxrss_mb']:6.0f} MB  threads {result['threads']}",
                    flush=True,
                )
        summary.append(summarize(workload, runs, args.accelerator))
    print()
    print(
        "| workload | tutorial loop (median) | project Trainer.fit (median) | ratio | target | "
        "peak RSS tutorial / project |"
    )
    print("|---|---|---|---|---|---|")
    for row in summary:
        print(row)


def summarize(workload: str, runs: dict[str, list[dict]], accelerator: str) -> str:
    median = {side: statistics.median(r["seconds"] for r in results) for side, results in runs.items()}
    rss = {side: max(r["maxrss_mb"] for r in results) for side, results in runs.items()}
    rate = {side: statistics.median(r["samples"] / r["seconds"] for r in rs) for side, rs in runs.items()}
    ratio = median["project"] / median["tutorial"]
    target = TARGETS[workload]
    verdict = "met" if ratio <= target else "MISSED"
    name = {"kospi": "KOSPI GRU, 301 epochs", "bilstm": "Bi-LSTM, 1 epoch x 60,000 images"}[workload]
    cells = [
        name,
        f"{median['tutorial']:.2f} s ({rate['tutorial']:.0f} samples/s)",
        f"{median['project']:.2f} s ({rate['project']:.0f} samples/s)",
        f"{ratio:.2f}x",
        f"<= {target:.2f}x ({verdict})",
        f"{rss['tutorial']:.0f} / {rss['project']:.0f} MB",
    ]
    if accelerator == "gpu":
        cuda = {side: max(r.get("cuda_peak_mb", 0.0) for r in results) for side, results in runs.items()}
        cells[-1] += f" (CUDA {cuda['tutorial']:.0f} / {cuda['project']:.0f} MB)"
    return "| " + " | ".join(cells) + " |"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
