#!/usr/bin/env bash
# GPU check, under 5 minutes on a machine with one or more NVIDIA GPUs. From the repository root, with the
# project installed (pip install -e ".[dev]"):
#
#   bash benchmarks/gpu_check.sh
#
# 1. cuDNN: enabled, its version, and that the recurrent layers really run cuDNN's kernel
#    (aten::_cudnn_rnn in the profiler, in fp32 and under bf16 autocast); weights scattered on purpose are
#    compacted again without the "not part of single contiguous chunk of memory" warning.
# 2. One-GPU fits of both tasks through the real command (KOSPI GRU in fp32, row-MNIST Bi-LSTM with
#    configs/trainer/gpu_bf16.yaml), then `test` of each checkpoint. With more than one GPU, the same fits
#    under configs/trainer/ddp.yaml on every GPU, and a one-GPU `test` of the DDP checkpoints. Each fit must
#    leave exactly one run folder and print no RNN-weights warning.
# 3. Samples per second of the tutorial's Bi-LSTM (configs/mnist_bilstm.yaml, batch 128) on the full
#    60,000-image training set, one GPU, fp32 and bf16-mixed: the median of the epochs after the first.
#
# Data, in this order: KOSPI_CSV (default ../shared/data/kospi/kospi_2019.csv), else a synthetic 431-row
# price CSV; MNIST_DIR (IDX files, torchvision layout or flat), else FASHION_DIR (default
# /usr/share/datasets/fashion-mnist), else 60,000 synthetic 28x28 images (speed does not depend on pixels).
# The script says which it used. Everything it writes goes to a temporary folder, deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { printf '\n=== %s (%ds)\n' "$1" $((SECONDS - start)); }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "environment and cuDNN"
python - <<'EOF'
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from rnn_lightning.models.module import RecurrentModel

if not torch.cuda.is_available():
    raise SystemExit("FAIL: no CUDA device visible to torch")
props = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {props.name} "
      f"({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor})")
print(f"cudnn enabled: {torch.backends.cudnn.enabled}, available: {torch.backends.cudnn.is_available()}, "
      f"version: {torch.backends.cudnn.version()}; bf16 supported: {torch.cuda.is_bf16_supported()}")
assert torch.backends.cudnn.enabled and torch.backends.cudnn.is_available(), "cuDNN is off"

model = RecurrentModel(backbone="bilstm", hidden_size=12, num_layers=2, task="classification",
                       input_size=28, sequence_length=28, num_outputs=10).cuda()
x = torch.rand(128, 28, 28, device="cuda")
for dtype in (None, torch.bfloat16):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            model(x).float().sum().backward()
        torch.cuda.synchronize()
    ops = {event.key for event in prof.key_averages()}
    name = "bf16-mixed" if dtype else "fp32"
    assert "aten::_cudnn_rnn" in ops, f"{name}: the LSTM did not run cuDNN's kernel: {sorted(ops)[:40]}"
    print(f"{name}: the Bi-LSTM runs aten::_cudnn_rnn (cuDNN)")

# Scatter the weights on purpose (new tensors bound in place of the compact buffer), then run forward.
model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
assert not model.backbone.weights_compact()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model(x)
chunk = [w for w in caught if "contiguous chunk" in str(w.message)]
assert not chunk and model.backbone.weights_compact(), f"RNN weights not compacted: {chunk}"
print("scattered RNN weights are compacted again on the first forward, without a warning")
EOF

step "data"
python - "$work" <<'EOF' > "$work/data.env"
import os
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from conftest import write_mnist_dir, write_price_csv  # noqa: E402

from rnn_lightning.data.rows import IDX_SOURCES  # noqa: E402

work = Path(sys.argv[1])
csv = Path(os.environ.get("KOSPI_CSV", "../shared/data/kospi/kospi_2019.csv"))
if not csv.is_file():
    print(f"{csv} not found: using a synthetic 431-row price CSV", file=sys.stderr)
    csv = write_price_csv(work / "prices.csv", rows=431)
choices = [("mnist", os.environ.get("MNIST_DIR")),
           ("fashion_mnist", os.environ.get("FASHION_DIR", "/usr/share/datasets/fashion-mnist"))]
for dataset, folder in choices:
    if folder and all(IDX_SOURCES[dataset].find(Path(folder), split) for split in ("train", "test")):
        break
else:
    print("no MNIST or Fashion-MNIST IDX files: using 60,000 synthetic images", file=sys.stderr)
    dataset, folder = "mnist", str(write_mnist_dir(work / "mnist", n_train=60000, n_test=10000))
print(f"KOSPI_DATA={csv.resolve()}")
print(f"MNIST_DATASET={dataset}")
print(f"MNIST_DATA={Path(folder).resolve()}")
EOF
# shellcheck disable=SC1091
. "$work/data.env"
echo "KOSPI: $KOSPI_DATA; row images: $MNIST_DATASET in $MNIST_DATA"
kospi=(--config configs/kospi_gru.yaml --data.csv_path "$KOSPI_DATA")
rows=(--config configs/mnist_bilstm.yaml --data.dataset "$MNIST_DATASET" --data.data_dir "$MNIST_DATA"
      --data.download false)

# fit NAME ARGS...: fit into $work/NAME, check its output; prints only the path of its last.ckpt.
fit() {
    local name=$1 root="$work/$1" log="$work/$1.log"
    shift
    if ! rnn-lightning fit "$@" --trainer.default_root_dir "$root" > "$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$name: fit failed"
    fi
    grep -q "contiguous chunk of memory" "$log" && fail "$name: RNN weights warning (see $log)"
    local versions=("$root"/lightning_logs/version_*)
    [ ${#versions[@]} -eq 1 ] || fail "$name: ${#versions[@]} run folders"
    [ -f "${versions[0]}/checkpoints/last.ckpt" ] || fail "$name: no last.ckpt"
    grep -aoE "Trainer.fit. stopped.*reached\.|GLOBAL_RANK: [0-9]+, MEMBER: [0-9/]+" "$log" \
        | sed "s/^/  $name: /" >&2 || true
    echo "${versions[0]}/checkpoints/last.ckpt"
}

# evaluate NAME CKPT ARGS...: one-GPU test of a checkpoint; prints the test metrics table.
evaluate() {
    local name=$1 ckpt=$2
    shift 2
    rnn-lightning test "$@" --trainer.accelerator gpu --trainer.devices 1 --ckpt_path "$ckpt" \
        --trainer.default_root_dir "$work/$name-test" > "$work/$name-test.log" 2>&1 \
        || { tail -n 40 "$work/$name-test.log"; fail "$name: test failed"; }
    grep -E "^\s+test_" "$work/$name-test.log" | sed "s/^/  $name test: /"
}

step "one GPU: KOSPI GRU (fp32, 30 epochs) and row-MNIST Bi-LSTM (bf16-mixed, 1 epoch)"
ckpt=$(fit kospi_1gpu "${kospi[@]}" --trainer.accelerator gpu --trainer.devices 1 --trainer.max_epochs 30)
evaluate kospi_1gpu "$ckpt" "${kospi[@]}"
ckpt=$(fit rows_1gpu "${rows[@]}" --config configs/trainer/gpu_bf16.yaml --trainer.devices 1 \
    --trainer.max_epochs 1)
evaluate rows_1gpu "$ckpt" "${rows[@]}"

gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -gt 1 ]; then
    step "$gpus GPUs, DDP: the same fits, then a one-GPU test of each DDP checkpoint"
    ckpt=$(fit kospi_ddp "${kospi[@]}" --config configs/trainer/ddp.yaml --trainer.accelerator gpu \
        --trainer.max_epochs 30)
    evaluate kospi_ddp "$ckpt" "${kospi[@]}"
    ckpt=$(fit rows_ddp "${rows[@]}" --config configs/trainer/ddp.yaml --config configs/trainer/gpu_bf16.yaml \
        --trainer.max_epochs 1)
    evaluate rows_ddp "$ckpt" "${rows[@]}"
else
    step "one GPU only: multi-GPU fits skipped"
fi

step "Bi-LSTM samples/s on the full training set, one GPU"
python - "$MNIST_DATASET" "$MNIST_DATA" <<'EOF'
import statistics
import sys
import time

import lightning.pytorch as pl
import torch
import yaml

from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.models.module import RecurrentModel

EPOCHS = 4  # the first one (cuDNN autotuning, allocator warm-up) is not counted


class EpochClock(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)


config = yaml.safe_load(open("configs/mnist_bilstm.yaml"))
dataset, data_dir = sys.argv[1], sys.argv[2]
print(f"{torch.cuda.get_device_name(0)}; {config['model']}, batch {config['data']['init_args']['batch_size']}")
for precision in ("32-true", "bf16-mixed"):
    pl.seed_everything(42, verbose=False)
    datamodule = RowMNISTDataModule(dataset=dataset, data_dir=data_dir, download=False, val_size=0,
                                    batch_size=config["data"]["init_args"]["batch_size"])
    model = RecurrentModel(**config["model"], task="classification", input_size=28, sequence_length=28,
                           num_outputs=10)
    clock = EpochClock()
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_epochs=EPOCHS, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[clock])
    trainer.fit(model, datamodule)
    samples = datamodule.train_dataloader().num_samples
    epoch = statistics.median(clock.seconds[1:])
    print(f"{precision:>10}: {samples} images/epoch, {epoch:.2f} s/epoch, {samples / epoch:,.0f} samples/s "
          f"(first epoch {clock.seconds[0]:.2f} s), peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    torch.cuda.reset_peak_memory_stats()
EOF

step "all checks passed"
