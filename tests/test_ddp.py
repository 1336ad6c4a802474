"""DDP on CPU processes (gloo): rank-aware batching, synced metrics, one run folder, exact evaluation.

The multi-process tests start the real console command ``rnn-lightning ... --trainer.strategy ddp
--trainer.devices 2`` as a subprocess: Lightning's ``ddp`` launcher re-runs the command line once per
extra rank, so it cannot run inside pytest's own process. Each rank records what it actually trained
on and the metrics it holds through :class:`RankProbe`, a test-only callback passed with
``--trainer.callbacks+=...``; this file is importable by the subprocesses because ``tests/`` is put on
their ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from helpers import CONFIGS, run_cli, write_mnist_dir, write_price_csv
from lightning.pytorch.callbacks import Callback

from rnn_lightning.data.batches import InMemoryBatches
from rnn_lightning.errors import UserInputError

TESTS = Path(__file__).resolve().parent
DDP_ARGS = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")


def fingerprints(samples: torch.Tensor) -> list[str]:
    """One short hash per sample (first dimension), so ranks can be compared sample by sample."""
    rows = samples.detach().cpu().contiguous().reshape(len(samples), -1).numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in rows]


class RankProbe(Callback):
    """Test-only: every rank writes ``<stage>-rank<R>.json`` into ``out_dir`` at teardown.

    It holds the fingerprints of the training samples the rank was given in each epoch (from the
    batches themselves, after any transform), the fingerprints of the whole training split, and the
    ``val_*`` and ``test_*`` values in the rank's ``trainer.callback_metrics``.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"train": {}, "val": [], "test": {}}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        epoch = self.record["train"].setdefault(str(trainer.current_epoch), {"batches": 0, "samples": []})
        epoch["batches"] += 1
        epoch["samples"] += fingerprints(batch[0])

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        loader = trainer.train_dataloader  # the data module's InMemoryBatches, unwrapped by Lightning
        everything = InMemoryBatches(loader.tensors, loader.num_samples, transform=loader.transform)
        self.record["train_split"] = fingerprints(next(iter(everything))[0])

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record["val"].append(self._metrics(trainer, "val_"))

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.record["test"] = self._metrics(trainer, "test_")

    @staticmethod
    def _metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}

    def teardown(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, **self.record}
        stage = getattr(stage, "value", stage)  # Lightning passes a str-valued enum
        (self.out_dir / f"{stage}-rank{trainer.global_rank}.json").write_text(json.dumps(record))


def probe_args(out_dir: Path) -> list[str]:
    spec = {"class_path": "test_ddp.RankProbe", "init_args": {"out_dir": str(out_dir)}}
    return [f"--trainer.callbacks+={json.dumps(spec)}"]


def read_probes(out_dir: Path, stage: str, world_size: int = 2) -> list[dict]:
    records = [json.loads((out_dir / f"{stage}-rank{r}.json").read_text()) for r in range(world_size)]
    assert all(r["world_size"] == world_size for r in records)
    return records


def console_command() -> str:
    script = Path(sys.executable).with_name("rnn-lightning")
    assert script.is_file(), f"the console script is not installed next to {sys.executable}"
    return str(script)


def run_ddp(*args: str | Path, cwd: Path) -> None:
    """``rnn-lightning <args> --trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp``."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    command = [console_command(), *map(str, args), *DDP_ARGS]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def run_folder(root: Path) -> Path:
    """The one version folder under ``root``, holding one checkpoint set and no partial files."""
    versions = sorted((root / "lightning_logs").iterdir())
    assert len(versions) == 1, versions
    files = sorted(p.name for p in (versions[0] / "checkpoints").iterdir())
    best = [name for name in files if name.startswith("best-")]
    assert len(best) == 1 and files == sorted([*best, "last.ckpt"]), files
    assert (versions[0] / "config.yaml").is_file()
    return versions[0]


def assert_disjoint_cover(records: list[dict], epochs: int) -> None:
    """Per epoch: same number of batches on each rank; shards disjoint, together the whole split."""
    split = records[0]["train_split"]
    assert len(set(split)) == len(split), "synthetic training samples must be distinct"
    for epoch in map(str, range(epochs)):
        shards = [r["train"][epoch]["samples"] for r in records]
        assert len({r["train"][epoch]["batches"] for r in records}) == 1
        assert all(len(set(s)) == len(s) for s in shards), "a rank saw a sample twice in one epoch"
        assert not set(shards[0]) & set(shards[1]), f"epoch {epoch}: ranks shared samples"
        assert sorted(shards[0] + shards[1]) == sorted(split), f"epoch {epoch}: shards do not cover the split"
    if epochs > 1:  # a new permutation each epoch
        assert records[0]["train"]["0"]["samples"] != records[0]["train"]["1"]["samples"]


# --- In-process: the batching itself and the stackable trainer presets (quick) ----------------------------


@pytest.mark.parametrize("num_samples", [1, 7, 45, 46])
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [4, 20])
def test_shards_are_disjoint_and_cover_each_epoch(num_samples: int, world_size: int, batch_size: int) -> None:
    data = torch.arange(num_samples)
    if num_samples < world_size:
        with pytest.raises(UserInputError, match=f"a split of {num_samples} samples cannot give each of {world_size}"):
            InMemoryBatches([data], batch_size, world_size=world_size)
        return
    epoch = {"n": 0}
    for shuffle in (False, True):
        ranks = [
            InMemoryBatches(
                [data], batch_size, shuffle=shuffle, seed=7, rank=r, world_size=world_size, epoch_fn=lambda: epoch["n"]
            )
            for r in range(world_size)
        ]
        orders = []
        for epoch["n"] in range(2):
            batches = [[b[0].tolist() for b in loader] for loader in ranks]
            assert len({len(b) for b in batches}) == 1 and all(len(b) == len(ranks[0]) for b in batches)
            seen = [sample for rank_batches in batches for batch in rank_batches for sample in batch]
            assert sorted(seen) == list(range(num_samples))  # disjoint and complete: each sample once
            orders.append(seen)
        if shuffle and num_samples > 2:
            assert orders[0] != orders[1]


@pytest.mark.parametrize("preset", ["ddp", "gpu_bf16"])
def test_trainer_presets_stack_on_an_experiment(preset: str, capsys: pytest.CaptureFixture) -> None:
    """``--config experiment --config preset``: the preset's trainer keys win, the experiment's stay."""
    preset_path = CONFIGS / "trainer" / f"{preset}.yaml"
    with pytest.raises(SystemExit) as done:
        run_cli("fit", "--config", CONFIGS / "kospi_gru.yaml", "--config", preset_path, "--print_config")
    assert done.value.code == 0
    merged = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(preset_path.read_text())["trainer"]
    assert {k: merged["trainer"][k] for k in expected} == expected
    assert merged["trainer"]["max_epochs"] == 301 and merged["model"]["backbone"] == "gru"
    assert merged["seed_everything"] == 42


# --- Real 2-process DDP on CPU (gloo) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kospi_ddp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-epoch DDP fit of the KOSPI GRU, without ``seed_everything``, so that the ranks start from
    different global seeds: the shuffle must still agree across them."""
    tmp = tmp_path_factory.mktemp("kospi_ddp")
    csv = write_price_csv(tmp / "prices.csv", rows=80)
    data = [
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        csv,
        "--data.split",
        "55",
        "--data.val_size",
        "9",
        "--data.batch_size",
        "8",
    ]
    root = tmp / "runs"
    run_ddp(
        "fit",
        *data,
        "--seed_everything",
        "false",
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",  # validation sharding is checked in both epochs
        "--trainer.default_root_dir",
        root,
        *probe_args(tmp / "probe"),
        cwd=tmp,
    )
    return {"tmp": tmp, "data": data, "root": root, "probe": tmp / "probe"}


@pytest.mark.slow
def test_kospi_ddp_fit_shards_metrics_and_one_run_folder(kospi_ddp: dict) -> None:
    records = read_probes(kospi_ddp["probe"], "fit")
    assert len(records[0]["train_split"]) == 46  # split 55 - val 9
    assert_disjoint_cover(records, epochs=2)
    assert len(records[0]["val"]) == 2 and {"val_loss", "val_rmse"} <= records[0]["val"][0].keys()
    assert records[0]["val"] == records[1]["val"]  # torchmetrics' compute() synced them, bit for bit
    run_folder(kospi_ddp["root"])


@pytest.mark.slow
def test_kospi_ddp_test_equals_single_device_test(kospi_ddp: dict) -> None:
    """The test split is sharded without padding and the metric states are summed across ranks, so a
    2-process ``test`` gives the single-process numbers (up to float summation order)."""
    checkpoint = run_folder(kospi_ddp["root"]) / "checkpoints" / "last.ckpt"
    tmp, data = kospi_ddp["tmp"], kospi_ddp["data"]
    run_ddp(
        "test",
        *data,
        "--ckpt_path",
        checkpoint,
        "--trainer.default_root_dir",
        tmp / "ddp_test",
        *probe_args(tmp / "ddp_probe"),
        cwd=tmp,
    )
    run_cli(
        "test",
        *data,
        "--ckpt_path",
        checkpoint,
        "--trainer.default_root_dir",
        tmp / "single_test",
        *probe_args(tmp / "single_probe"),
    )
    ddp = read_probes(tmp / "ddp_probe", "test")
    (single,) = read_probes(tmp / "single_probe", "test", world_size=1)
    assert ddp[0]["test"] == ddp[1]["test"]
    assert {"test_loss", "test_rmse", "test_mae", "test_mape", "test_naive_rmse"} <= single["test"].keys()
    assert ddp[0]["test"].keys() == single["test"].keys()
    for name, value in single["test"].items():
        assert ddp[0]["test"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


@pytest.mark.slow
def test_mnist_ddp_fit_then_single_device_test(tmp_path: Path) -> None:
    data_dir = write_mnist_dir(tmp_path / "mnist_data", n_train=90, n_test=30)
    data = [
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.data_dir",
        data_dir,
        "--data.download",
        "false",
        "--data.val_size",
        "21",
        "--data.batch_size",
        "16",
        "--model.hidden_size",
        "4",
    ]
    root = tmp_path / "runs"
    run_ddp(
        "fit",
        *data,
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        root,
        *probe_args(tmp_path / "probe"),
        cwd=tmp_path,
    )
    records = read_probes(tmp_path / "probe", "fit")
    assert len(records[0]["train_split"]) == 69
    assert_disjoint_cover(records, epochs=1)
    assert records[0]["val"] == records[1]["val"] and {"val_loss", "val_acc"} <= records[0]["val"][0].keys()
    checkpoint = run_folder(root) / "checkpoints" / "last.ckpt"

    run_cli(
        "test",
        *data,
        "--ckpt_path",
        checkpoint,
        "--trainer.default_root_dir",
        tmp_path / "test",
        *probe_args(tmp_path / "test_probe"),
    )
    (single,) = read_probes(tmp_path / "test_probe", "test", world_size=1)
    assert 0.0 <= single["test"]["test_acc"] <= 1.0 and single["test"]["test_loss"] > 0
