"""Time ensembles (``--model.members N``) against one member, side by side in one run.

Workloads, each the project's own config trained with ``Trainer.fit`` as ``rnn-lightning fit`` builds it:

* ``kospi``: ``configs/kospi_gru.yaml`` as shipped (the tutorial GRU, 301 epochs on the bundled CSV) with
  1, 16 and 64 members. Goals: 16 members in at most 1.5x the time of 1, 64 in at most 3x.
* ``mnist``: ``configs/mnist_bilstm.yaml`` (the tutorial Bi-LSTM) for one epoch over 60,000 training
  images (``--data.val_size 0``) with 1 and 8 members. Goal: 8 members in at most 3x the time of 1.
  ``--mnist-dir DIR`` reads MNIST's IDX files from DIR (torchvision's layout or the files directly);
  without it the run uses 60,000 synthetic 28x28 images written to a temporary folder: the time of an
  epoch does not depend on the pixel values, and the benchmark then needs no download.

Threads: the configs' ``num_threads: 1``. The solo Bi-LSTM also runs its two directions on a second
thread (the config's ``parallel_directions``); an ensemble computes every member's two directions in the
same kernels instead, so ``--mnist-threads 2`` adds a row of 8 members with two intra-op threads, the
same two cores by another road.

Each fit runs in its own child process, member counts alternate ``--repeats`` times, and the medians and
their ratios to 1 member are printed with the goals. Timed: ``trainer.fit`` (reading the data included),
not the imports or building the run.

``--compare-block-diagonal`` also times one training step (forward, backward, Adam) of the KOSPI GRU's
recurrent layers three ways: the members' batched recurrence, one wide ``nn.GRU`` whose block-diagonal
weights hold the members (cross-member blocks kept at zero by a gradient mask), and a loop over the
members' own ``nn.GRU`` layers (what fitting each member apart costs in arithmetic alone).

Run from the repository root::

    python benchmarks/bench_members.py                    # both workloads, 3 alternations
    python benchmarks/bench_members.py --only kospi --repeats 5
    python benchmarks/bench_members.py --only mnist --mnist-threads 2
    python benchmarks/bench_members.py --compare-block-diagonal --only none
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KOSPI_MEMBERS = (1, 16, 64)
MNIST_MEMBERS = (1, 8)
GOALS = {("kospi", 16): 1.5, ("kospi", 64): 3.0, ("mnist", 8): 3.0}


def synthetic_mnist(root: Path, n: int = 60_000) -> Path:
    """``n`` random 28x28 training images (and 100 test images) as IDX files under ``root``."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import write_idx

    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", 100)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))
    return root


def fit_args(workload: str, members: int, threads: int, data_dir: str, root: str) -> list[str]:
    common = ["--trainer.default_root_dir", root, "--model.members", str(members)]
    if threads:
        common += ["--num_threads", str(threads)]
    if workload == "kospi":
        return ["--config", str(REPO / "configs" / "kospi_gru.yaml"), *common]
    return [
        "--config",
        str(REPO / "configs" / "mnist_bilstm.yaml"),
        "--data.data_dir",
        data_dir,
        "--data.download",
        "false",
        "--data.val_size",
        "0",
        "--trainer.max_epochs",
        "1",
        *common,
    ]


def child(workload: str, members: int, threads: int, data_dir: str) -> dict:
    """One timed fit in this process."""
    import torch

    from rnn_lightning import runs

    with tempfile.TemporaryDirectory(prefix="bench_members_") as root:
        config = runs.prepare_process(runs.parse_args(fit_args(workload, members, threads, data_dir, root)))
        run = runs.build(config, "fit")
        start, cpu = time.perf_counter(), time.process_time()
        with runs.quiet_warnings(), runs.quiet_lightning():
            run.trainer.fit(run.model, datamodule=run.datamodule)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        weights = sum(p.numel() for p in run.model.parameters())
        backbone = run.model.backbone
        helper = backbone.parallel_directions and backbone.bidirectional  # a solo model's direction thread
    threads = f"{torch.get_num_threads()}" + (" + 1 for directions" if helper else "")
    return {"seconds": seconds, "cpu_seconds": cpu, "threads": threads, "weights": weights}


def measure(workload: str, members: int, threads: int, data_dir: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", workload, str(members), str(threads), data_dir]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench_members: the {workload} run with {members} members failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_block_diagonal(steps: int = 200) -> None:
    """One training step of the KOSPI GRU's recurrent layers (B 20, T 5, hidden 8, 2 layers), three ways."""
    import torch
    from torch import nn

    from rnn_lightning.models.members import MemberRecurrence

    torch.set_num_threads(1)
    B, T, F, H, L = 20, 5, 4, 8, 2

    def timed(step) -> float:
        for _ in range(10):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps * 1e3

    def trainer(params, forward):
        optimizer = torch.optim.Adam(params, fused=True)

        def step() -> None:
            optimizer.zero_grad()
            forward().square().sum().backward()
            optimizer.step()

        return step

    x = torch.randn(B, T, F)
    print(f"\none training step of the recurrent layers, ms (mean of {steps}), 1 thread")
    print(f"{'members':>8} {'batched':>10} {'block-diag':>11} {'loop':>10}")
    for M in (1, 16, 64):
        layers = [nn.GRU(F, H, L, batch_first=True) for _ in range(M)]
        packed = MemberRecurrence(layers)
        batched = timed(trainer(packed.parameters(), lambda packed=packed: packed(x)))
        wide = nn.GRU(F, M * H, L, batch_first=True)
        for name, p in wide.named_parameters():
            if name.startswith("weight_hh") or name.startswith("weight_ih_l1"):
                rows = torch.arange(p.shape[0]) % (M * H) // H
                cols = torch.arange(p.shape[1]) // H
                mask = (rows[:, None] == cols[None, :]).float()
                with torch.no_grad():
                    p.mul_(mask)
                p.register_hook(lambda g, m=mask: g * m)
        block = timed(trainer(wide.parameters(), lambda wide=wide: wide(x)[0]))
        params = [p for layer in layers for p in layer.parameters()]
        loop = timed(trainer(params, lambda layers=layers: torch.stack([layer(x)[0] for layer in layers])))
        print(f"{M:>8} {batched:>10.2f} {block:>11.2f} {loop:>10.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["kospi", "mnist", "none"], help="one workload (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--mnist-dir", help="MNIST IDX files (default: 60,000 synthetic images)")
    parser.add_argument("--mnist-threads", type=int, default=0, help="also 8 members with this many threads")
    parser.add_argument("--compare-block-diagonal", action="store_true", help="also time the alternatives")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload, members, threads, data_dir = args.child
        print(json.dumps(child(workload, int(members), int(threads), data_dir)))
        return
    workloads = [w for w in ("kospi", "mnist") if args.only in (None, w)]
    with tempfile.TemporaryDirectory(prefix="bench_members_mnist_") as tmp:
        data_dir = args.mnist_dir or (str(synthetic_mnist(Path(tmp))) if "mnist" in workloads else "")
        runs: list[tuple[str, int, int]] = []
        for workload in workloads:
            counts = KOSPI_MEMBERS if workload == "kospi" else MNIST_MEMBERS
            runs += [(workload, m, 0) for m in counts]
            if workload == "mnist" and args.mnist_threads:
                runs.append((workload, 8, args.mnist_threads))
        results: dict[tuple[str, int, int], list[dict]] = {run: [] for run in runs}
        for repeat in range(args.repeats):
            for run in runs:
                result = measure(run[0], run[1], run[2], data_dir)
                results[run].append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {run[0]} members {run[1]}"
                    f"{f' threads {run[2]}' if run[2] else ''}: {result['seconds']:.2f} s wall, "
                    f"{result['cpu_seconds']:.2f} s CPU",
                    flush=True,
                )
    if runs:
        print(f"\nmedians of {args.repeats}; ratio = wall time / the same workload's 1-member wall time")
        print(f"{'workload':<8} {'members':>7} {'threads':>22} {'weights':>8} {'wall s':>8} {'ratio':>6} {'goal':>6}")
    for workload in workloads:
        one = statistics.median(r["seconds"] for r in results[(workload, 1, 0)])
        for run in (r for r in runs if r[0] == workload):
            wall = statistics.median(r["seconds"] for r in results[run])
            goal = GOALS.get((workload, run[1]))
            verdict = "" if goal is None else f"<={goal:g}x {'met' if wall / one <= goal else 'MISSED'}"
            first = results[run][0]
            print(
                f"{workload:<8} {run[1]:>7} {first['threads']:>22} {first['weights']:>8} {wall:>8.2f} "
                f"{wall / one:>5.2f}x {verdict}"
            )
    if args.compare_block_diagonal:
        compare_block_diagonal()


if __name__ == "__main__":
    main()
