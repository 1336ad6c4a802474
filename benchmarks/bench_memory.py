"""Peak memory and time of ``fit`` on long synthetic price series (issue 15, item 6).

Writes a synthetic Yahoo-format CSV (Date,Open,High,Low,Close,Adj Close,Volume; a random walk on
business days) of each requested length into a temporary folder, then runs in child processes, one at a
time:

* ``floor``: ``python -c "import torch, lightning"``, the resident memory every run starts from (torch's
  CUDA build maps about 800 MB of libraries on import);
* ``setup``: ``DailyPricesDataModule(...).setup("fit")`` (read and validate the CSV, build the windows), then
  what the model's ``setup`` asks of it when fitting starts (``fitted_scaling()``) and the training
  windows, timed phase by phase;
* ``fit``: ``python -m rnn_lightning fit --config configs/kospi_gru.yaml ...`` with 10 training batches of
  1024 windows, 2 validation batches, one epoch, plots off (``--plots`` runs it once more with plots on).

Peak resident memory (max RSS) is each child's own, from ``os.wait4``: the same number ``/usr/bin/time -v``
prints as "Maximum resident set size". The table is markdown, for docs/long-series.md.

Daily rows on business days fit pandas' date range (1677-2262) up to about 150,000 rows; a longer
series is written as an intraday one, 390 one-minute bars per business day (09:30-15:59), which is what
a history of 10^6 or 10^7 rows is in practice.

    python benchmarks/bench_memory.py                      # 10^5, 10^6, 10^7 rows, + 5-day windows on 10^6
    python benchmarks/bench_memory.py --rows 100000 1000000
    python benchmarks/bench_memory.py --rows 1000000 --plots   # also fit with the end-of-fit plot on
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 500_000  # rows generated and written at a time: generating 10^7 rows stays under ~100 MB
DAILY_LIMIT = 140_000  # business days from 1700 that stay inside pandas' Timestamp range
BARS_PER_DAY = 390

SETUP_CHILD = r"""
import json, resource, sys, time
def rss():  # peak resident MB so far (ru_maxrss is in KiB on Linux)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
import torch, lightning
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.prices import read_price_csv
out = {"import_s": time.perf_counter() - t0, "import_mb": rss()}
csv, T = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
dm = DailyPricesDataModule(csv_path=csv, sequence_length=T, batch_size=1024, split=0.8, val_size=0.05)
dm.setup("fit")
out.update(setup_s=time.perf_counter() - t, setup_mb=rss(), rows=len(dm.close), windows=dm.num_windows)
t = time.perf_counter()
scaling = dm.fitted_scaling()
train = dm.windows("train")
batch = train.x.index_select(0, torch.arange(0, len(train.x), max(1, len(train.x) // 1024))[:1024])
out.update(scaling_s=time.perf_counter() - t, scaling_mb=rss(), batch_shape=list(batch.shape),
           x_is_view=train.x.untyped_storage().data_ptr() == dm.raw_features.untyped_storage().data_ptr())
print("RESULT " + json.dumps(out))
"""

# Per training batch: the data side as it is now (gather 1024 windows from the (rows x features) float64
# view, then the model's scaling to float32) against the one before the refactor (gather from all
# windows materialised, scaled, as one contiguous float32 (W, T, F) tensor), beside the network's own
# training step (the config's GRU: hidden 8 x 2 layers, flatten readout, Adam), one thread as the config.
SPEED_CHILD = r"""
import json, sys, time, torch
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.models.scaling import PriceScaling
torch.set_num_threads(1)
csv, T, B, reps = sys.argv[1], int(sys.argv[2]), 1024, 50
dm = DailyPricesDataModule(csv_path=csv, sequence_length=T, batch_size=B, split=0.8, val_size=0.05)
dm.setup("fit")
scaling = PriceScaling(dm.features)
scaling.set_fitted(**dm.fitted_scaling())
train = dm.windows("train")
g = torch.Generator().manual_seed(0)
idx = [torch.randperm(len(train.x), generator=g)[:B] for _ in range(reps)]
def per_batch(fn):
    fn(idx[0]); t = time.perf_counter()
    for rows in idx: fn(rows)
    return (time.perf_counter() - t) / reps * 1e3
now = per_batch(lambda rows: scaling.scale_inputs(train.x.index_select(0, rows), train.ref.index_select(0, rows)))
before_x = scaling.scale_inputs(train.x, train.ref).contiguous()  # (W, T, F) float32, as before
before = per_batch(lambda rows: before_x.index_select(0, rows))
del before_x
gru, head = torch.nn.GRU(dm.input_size, 8, 2, batch_first=True), torch.nn.Linear(8 * T, 1)
opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3)
x = scaling.scale_inputs(train.x[:B], train.ref[:B]); y = torch.zeros(B, 1)
def step(rows):
    opt.zero_grad(); loss = torch.nn.functional.mse_loss(head(gru(x)[0].flatten(1)), y); loss.backward(); opt.step()
out = {"gather_now_ms": now, "gather_before_ms": before, "train_step_ms": per_batch(step)}
print("RESULT " + json.dumps(out))
"""


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A Yahoo-format CSV of ``rows`` rows of a geometric random walk, written CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    daily = rows <= DAILY_LIMIT
    sigma = 0.01 if daily else 0.0005
    close = 2000.0
    with path.open("w", newline="") as f:
        f.write("Date,Open,High,Low,Close,Adj Close,Volume\n")
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            i = np.arange(start, start + n)
            if daily:
                stamps = np.busday_offset("1700-01-01", i, roll="forward")
            else:
                days = np.busday_offset("2000-01-03", i // BARS_PER_DAY, roll="forward")
                stamps = days.astype("datetime64[m]") + (570 + i % BARS_PER_DAY).astype("timedelta64[m]")
            steps = rng.normal(0.0, sigma, n)
            closes = close * np.exp(np.cumsum(steps))
            opens = np.concatenate([[close], closes[:-1]])
            close = float(closes[-1])
            wick = np.abs(rng.normal(0.0, sigma / 2, (2, n)))
            high = np.maximum(opens, closes) * (1 + wick[0])
            low = np.minimum(opens, closes) * (1 - wick[1])
            volume = rng.integers(100_000, 1_000_000, n)
            chunk = pd.DataFrame(
                {
                    "Date": stamps,
                    "Open": opens,
                    "High": high,
                    "Low": low,
                    "Close": closes,
                    "Adj Close": closes,
                    "Volume": volume,
                }
            )
            chunk.to_csv(
                f,
                header=False,
                index=False,
                float_format="%.4f",
                lineterminator="\n",
                date_format="%Y-%m-%d" if daily else "%Y-%m-%d %H:%M:%S",
            )


def run_child(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (niced), return its wall time, exit status and own peak RSS (MB), and its stdout."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(["nice", "-n", "5", *cmd], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode:
        print(
            f"  ! exit {proc.returncode}; last lines of {log}:\n" + "\n".join(text.splitlines()[-15:]), file=sys.stderr
        )
    return {
        "wall_s": time.perf_counter() - start,
        "rc": proc.returncode,
        "peak_mb": usage.ru_maxrss / 1024,
        "text": text,
    }


def fit_cmd(csv: Path, T: int, root: Path, plots: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnn_lightning",
        "fit",
        "--config",
        "configs/kospi_gru.yaml",
        "--data.csv_path",
        str(csv),
        "--data.sequence_length",
        str(T),
        "--data.batch_size",
        "1024",
        "--data.split",
        "0.8",
        "--data.val_size",
        "0.05",
        "--trainer.limit_train_batches",
        "10",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--plots.enabled",
        str(plots).lower(),
        "--trainer.default_root_dir",
        str(root),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--sequence-length", type=int, default=60)
    parser.add_argument("--no-short", action="store_true", help="skip the 5-day-window case on 10^6 rows")
    parser.add_argument("--plots", action="store_true", help="also fit once with plots on (largest <=10^6 rows)")
    parser.add_argument("--no-fit", action="store_true", help="floor and setup only")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="also time a training batch's data side now vs materialised windows (10^6 rows)",
    )
    parser.add_argument("--keep", type=Path, help="write the CSVs and runs here and keep them")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench_memory_")
    work = args.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    floor = run_child([sys.executable, "-c", "import torch, lightning"], work / "floor.log")
    print(f"floor (import torch, lightning): {floor['peak_mb']:.0f} MB peak RSS, {floor['wall_s']:.1f} s", flush=True)

    cases = [(rows, args.sequence_length, False) for rows in args.rows]
    if not args.no_short and 1_000_000 in args.rows:
        cases.insert(args.rows.index(1_000_000) + 1, (1_000_000, 5, False))
    if args.plots:
        small = [r for r in args.rows if r <= 1_000_000]
        if small:
            cases.append((max(small), args.sequence_length, True))
    table = []
    for rows, T, plots in cases:
        csv = work / f"prices_{rows}.csv"
        if not csv.exists():
            t = time.perf_counter()
            write_csv(csv, rows)
            print(
                f"wrote {csv.name}: {csv.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s", flush=True
            )
        name = f"{rows:,} rows, {T}-day windows" + (", plots on" if plots else "")
        row: dict = {"case": name, "csv_mb": csv.stat().st_size / 2**20}
        if not plots:
            setup = run_child([sys.executable, "-c", SETUP_CHILD, str(csv), str(T)], work / f"setup_{rows}_{T}.log")
            found = [ln for ln in setup["text"].splitlines() if ln.startswith("RESULT ")]
            detail = json.loads(found[-1][7:]) if found else {}
            row.update(setup_peak_mb=setup["peak_mb"], setup_s=detail.get("setup_s", float("nan")), setup_detail=detail)
            print(f"  setup {name}: {json.dumps(detail)} peak {setup['peak_mb']:.0f} MB", flush=True)
        if not args.no_fit:
            fit = run_child(
                fit_cmd(csv, T, work / f"run_{rows}_{T}_{int(plots)}", plots), work / f"fit_{rows}_{T}_{int(plots)}.log"
            )
            row.update(fit_peak_mb=fit["peak_mb"], fit_s=fit["wall_s"], fit_rc=fit["rc"])
            print(f"  fit   {name}: peak {fit['peak_mb']:.0f} MB, {fit['wall_s']:.1f} s, rc {fit['rc']}", flush=True)
        table.append(row)

    if args.speed:
        rows = 1_000_000 if 1_000_000 in args.rows else min(args.rows)
        csv = work / f"prices_{rows}.csv"
        for T in (args.sequence_length, 5):
            speed = run_child([sys.executable, "-c", SPEED_CHILD, str(csv), str(T)], work / f"speed_{rows}_{T}.log")
            found = [ln for ln in speed["text"].splitlines() if ln.startswith("RESULT ")]
            if found:
                d = json.loads(found[-1][7:])
                print(
                    f"per batch of 1024, {rows:,} rows, {T}-day windows: gather+scale now {d['gather_now_ms']:.2f} ms, "
                    f"gather from materialised float32 windows (before) {d['gather_before_ms']:.2f} ms, "
                    f"GRU training step {d['train_step_ms']:.1f} ms",
                    flush=True,
                )

    def cell(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    print(f'\nFloor: `python -c "import torch, lightning"` peaks at {floor["peak_mb"]:.0f} MB.\n')
    print(
        "| case | CSV (MB) | setup: read + validate + windows (s) | setup peak RSS (MB) "
        "| fit: total wall (s) | fit peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in table:
        rc = "" if row.get("fit_rc", 0) == 0 else f" (exit {row['fit_rc']})"
        print(
            f"| {row['case']} | {row['csv_mb']:.0f} | {cell(row, 'setup_s', '.1f')} | "
            f"{cell(row, 'setup_peak_mb', '.0f')} | {cell(row, 'fit_s', '.1f')} | "
            f"{cell(row, 'fit_peak_mb', '.0f')}{rc} |"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
