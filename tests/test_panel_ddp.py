"""Panels under DDP: each rank its own share of the training windows, test metrics equal one process's.

In-process: :class:`PanelBatches` of two ranks split every epoch's windows (capped per series, shuffled)
into disjoint shards that together are the epoch, with the same number of batches on each rank.

Slow (real 2-process DDP on CPU with gloo, as ``tests/test_ddp.py``): a tiny panel is fitted under 2
ranks without ``seed_everything`` (each rank starts from its own seed: the draw must still agree),
:class:`PanelProbe` recording the (series, origin) pairs each rank trained on; then the checkpoint's
``test`` under 2 ranks gives one process's metrics, and ``predict`` under 2 ranks writes every row once.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
from lightning.pytorch.callbacks import Callback
from test_ddp import read_probes, run_ddp, run_folder
from test_panels import LENGTHS, cli_args, make_panel, run_cli

from rnn_lightning.data.panel import PanelBatches, WindowIndex, panel_from_frame, scaling, split_panel
from rnn_lightning.data.panel.sampling import sample_rows


def pairs(series: np.ndarray, origin: np.ndarray) -> list[tuple[int, int]]:
    return [(int(s), int(o)) for s, o in zip(series, origin, strict=True)]


@pytest.mark.parametrize("cap", [None, 1, 3])
@pytest.mark.parametrize("batch_size", [4, 7])
def test_two_ranks_share_each_epoch_without_overlap(cap: int | None, batch_size: int) -> None:
    frame = make_panel({"a": 40, "b": 48, "c": 61, "d": 33})
    splits = split_panel(panel_from_frame(frame), input_length=12, horizon=6)
    epoch = {"n": 0}

    def loader(rank: int, world_size: int) -> PanelBatches:
        return PanelBatches(
            splits, "train", batch_size, shuffle=True, max_windows_per_series=cap, seed=11, rank=rank,
            world_size=world_size, epoch_fn=lambda: epoch["n"],
        )  # fmt: skip

    ranks, whole = [loader(0, 2), loader(1, 2)], loader(0, 1)
    epochs = []
    for epoch["n"] in range(3):
        shards = [[pairs(b.series.numpy(), b.origin.numpy()) for b in r] for r in ranks]
        assert len(shards[0]) == len(shards[1]) == len(ranks[0])  # the same number of steps on each rank
        seen = [[w for batch in shard for w in batch] for shard in shards]
        assert all(len(set(s)) == len(s) for s in seen), "a rank saw a window twice in one epoch"
        assert not set(seen[0]) & set(seen[1]), "the ranks shared a window"
        everything = [w for b in whole for w in pairs(b.series.numpy(), b.origin.numpy())]
        assert sorted(seen[0] + seen[1]) == sorted(everything)  # together: the one-process epoch
        if cap is not None:
            per_series = pd.Series([s for s, _ in everything]).value_counts()
            assert (per_series <= cap).all()
        epochs.append(sorted(everything))
    assert epochs[0] != epochs[1] or cap is None  # a fresh draw each epoch under a cap


def one_pass_sample(series: np.ndarray, cap: int | None, seed: int, epoch: int) -> np.ndarray:
    """The cap's definition in one pass over every window: the ``cap`` smallest keys of each series."""
    if cap is None:
        return np.arange(len(series))
    keys = np.random.default_rng([seed, epoch]).random(len(series))
    order = np.lexsort((keys, series))
    rank = np.concatenate([np.arange(c) for c in np.bincount(series)]) if len(series) else np.zeros(0, int)
    return np.sort(order[rank < cap])


@pytest.mark.parametrize("block", [None, 10])
@pytest.mark.parametrize("cap", [None, 1, 2, 5, 8, 9])
def test_the_fast_draw_is_the_index_draw(cap: int | None, block: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sample_rows`` (what every rank draws each epoch) and ``WindowIndex.sample`` keep the windows of the
    cap's one-pass definition, also when they draw and sort in blocks of series of at most 10 windows."""
    if block is not None:
        monkeypatch.setattr(scaling, "CHUNK_ROWS", block)
    rng = np.random.default_rng(3)
    for trial in range(60):
        counts = rng.integers(0, 14, rng.integers(1, 25)) if trial % 2 else rng.integers(9, 14, 7)
        if not counts.sum():
            continue
        index = WindowIndex(rng.integers(0, 50, len(counts)), counts, 3, 12, 6)
        for epoch in range(2):
            want = one_pass_sample(index.series, cap, 5, epoch)
            np.testing.assert_array_equal(index.sample(cap, 5, epoch), want)
            np.testing.assert_array_equal(sample_rows(index, cap, 5, epoch), want)
        rows = rng.permutation(len(index))[: len(index) // 2]
        series, origin = index.locate(rows)
        np.testing.assert_array_equal(series, index.series[rows])
        np.testing.assert_array_equal(origin, index.origin[rows])
        runs = enumerate(zip(index.first, counts, strict=True))
        want_pairs = [(s, f + 3 * k) for s, (f, c) in runs for k in range(c)]
        assert list(zip(index.series.tolist(), index.origin.tolist(), strict=True)) == want_pairs


class PanelProbe(Callback):
    """Test-only: each rank writes ``<stage>-rank<R>.json``: the windows it trained on, its test metrics."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {"train": {}, "epoch_windows": {}, "test": {}}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader  # the data module's PanelBatches
        rows = loader.index.sample(loader.max_windows_per_series, loader.seed, trainer.current_epoch)
        windows = pairs(loader.index.series[rows], loader.index.origin[rows])
        self.record["epoch_windows"][str(trainer.current_epoch)] = windows

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        epoch = self.record["train"].setdefault(str(trainer.current_epoch), [])
        epoch.append(pairs(batch.series.cpu().numpy(), batch.origin.cpu().numpy()))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["test"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stage = getattr(stage, "value", stage)
        record = {"world_size": trainer.world_size, **self.record}
        (self.out_dir / f"{stage}-rank{trainer.global_rank}.json").write_text(json.dumps(record))


def probe(out_dir: Path) -> str:
    spec = {"class_path": "test_panel_ddp.PanelProbe", "init_args": {"out_dir": str(out_dir)}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


@pytest.mark.slow
def test_panel_ddp_shards_windows_and_test_equals_one_process(tmp_path: Path) -> None:
    path = tmp_path / "panel.csv"
    make_panel().sample(frac=1.0, random_state=1).to_csv(path, index=False)
    extra = ("--data.max_windows_per_series", 4, "--plots.enabled", "false", "--data.batch_size", 4)
    fit_root = tmp_path / "fit"
    fit = cli_args(path, fit_root, *extra, "--seed_everything", "false", probe(tmp_path / "fit_probe"))
    run_ddp("fit", *map(str, fit), cwd=tmp_path)
    records = read_probes(tmp_path / "fit_probe", "fit")
    for epoch in ("0", "1"):
        drawn = [r["epoch_windows"][epoch] for r in records]
        assert drawn[0] == drawn[1], "the ranks drew different windows (their seeds were not shared)"
        shards = [[tuple(w) for batch in r["train"][epoch] for w in batch] for r in records]
        assert len(records[0]["train"][epoch]) == len(records[1]["train"][epoch])
        assert not set(shards[0]) & set(shards[1]), f"epoch {epoch}: the ranks shared a window"
        assert sorted(shards[0] + shards[1]) == sorted(map(tuple, drawn[0])), f"epoch {epoch}: not the epoch"
    checkpoint = run_folder(fit_root) / "checkpoints" / "last.ckpt"

    test = ("--ckpt_path", checkpoint, "--data.batch_size", 2)  # 3 test windows: an uneven split over ranks
    run_ddp(
        "test", *map(str, cli_args(path, tmp_path / "ddp_test", *extra, *test, probe(tmp_path / "ddp"))), cwd=tmp_path
    )
    run_cli("test", *cli_args(path, tmp_path / "one_test", *extra, *test, probe(tmp_path / "one")))
    ddp = read_probes(tmp_path / "ddp", "test")
    (one,) = read_probes(tmp_path / "one", "test", world_size=1)
    assert {"test_mase", "test_snaive_mase", "test_smape", "test_rmse", "test_loss"} <= one["test"].keys()
    assert ddp[0]["test"] == ddp[1]["test"] and ddp[0]["test"].keys() == one["test"].keys()
    for name, value in one["test"].items():
        assert ddp[0]["test"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name

    predict = ("--ckpt_path", checkpoint, "--data.future", "true")
    run_ddp("predict", *map(str, cli_args(path, tmp_path / "ddp_predict", *extra, *predict)), cwd=tmp_path)
    run_cli("predict", *cli_args(path, tmp_path / "one_predict", *extra, *predict))
    tables = [pd.read_csv(next((tmp_path / name).rglob("predictions.csv"))) for name in ("ddp_predict", "one_predict")]
    assert len(tables[0]) == 2 * len(LENGTHS) * 6  # every series' test and future steps, each once
    assert not tables[0].duplicated(["unique_id", "ds", "split"]).any()
    pd.testing.assert_frame_equal(tables[0], tables[1], rtol=1e-5)
