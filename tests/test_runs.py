"""The run factory's promises beyond the API page: old class paths keep working, and backtest workers by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONFIGS, only_version_dir, run_cli, write_price_csv

import rnn_lightning.backtest.plan as plan
from rnn_lightning import runs


def old_config(path: Path, csv: Path, features: list[str], class_path: str) -> Path:
    """A KOSPI config as written before the rename, naming the data module by its old class path."""
    path.write_text(
        yaml.safe_dump(
            {
                "seed_everything": 1,
                "trainer": {"max_epochs": 1, "enable_progress_bar": False},
                "model": {"backbone": "gru", "hidden_size": 4, "num_layers": 1},
                "data": {
                    "class_path": class_path,
                    "init_args": {"csv_path": str(csv), "features": features, "split": 50, "val_size": 10},
                },
            }
        )
    )
    return path


def test_configs_and_checkpoints_of_the_old_class_path_keep_working(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_price_csv(tmp_path / "prices.csv")
    features = ["Open", "High", "Low", "Volume"]
    old = old_config(tmp_path / "old.yaml", csv, features, "rnn_lightning.data.kospi.KospiDataModule")
    run_cli("fit", "--config", old, "--trainer.default_root_dir", tmp_path / "old")
    last = only_version_dir(tmp_path / "old") / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert "KospiDataModule" in saved  # Lightning filed the data module's state under its old name
    # The checkpoint tests under the new name, and its data identity is still read: other features are refused.
    new = old_config(tmp_path / "new.yaml", csv, features, "rnn_lightning.data.DailyPricesDataModule")
    run_cli("test", "--config", new, "--ckpt_path", last, "--trainer.default_root_dir", tmp_path / "new")
    other = old_config(
        tmp_path / "other.yaml", csv, ["Open", "High", "Low", "Close"], "rnn_lightning.data.DailyPricesDataModule"
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("test", "--config", other, "--ckpt_path", last, "--trainer.default_root_dir", tmp_path / "other")
    assert exit_info.value.code == 2
    assert "features" in capsys.readouterr().err


def backtest_args(csv: Path, root: Path, *extra: object) -> list[object]:
    return [
        "backtest",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        csv,
        "--data.split",
        "50",
        "--data.val_size",
        "5",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        root,
        "--backtest.folds",
        "2",
        "--backtest.test_size",
        "5",
        "--backtest.bootstrap",
        "0",
        *extra,
    ]


def test_backtest_workers_default_to_the_usable_cores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --backtest.workers: one worker per usable core (here: 2) when the folds can run apart, else one."""
    monkeypatch.setattr(plan, "usable_cores", lambda: 2)
    csv = write_price_csv(tmp_path / "prices.csv")
    run_cli(*backtest_args(csv, tmp_path / "auto"))  # kospi_gru.yaml: num_threads 1, refit scratch, CPU
    assert "2 at a time" in capsys.readouterr().out
    run_cli(*backtest_args(csv, tmp_path / "one", "--backtest.workers", "1"))
    assert "at a time" not in capsys.readouterr().out
    run_cli(*backtest_args(csv, tmp_path / "warm", "--backtest.refit", "warm"))
    assert "at a time" not in capsys.readouterr().out
    # The same outputs either way (the folds are seeded by their index).
    auto, one = only_version_dir(tmp_path / "auto"), only_version_dir(tmp_path / "one")
    assert (auto / "backtest.csv").read_bytes() == (one / "backtest.csv").read_bytes()


def test_process_settings_happen_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run with the same settings in one process changes nothing global; a new thread count applies."""
    import logging

    from rnn_lightning import speedups
    from rnn_lightning.runs import runtime

    calls: list[bool] = []
    threads: list[int] = []
    monkeypatch.setattr(speedups, "apply_process", lambda enabled: calls.append(enabled) or {})
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads[-1] if threads else 2)
    runtime._apply_once.cache_clear()
    config = runs.load_config(CONFIGS / "kospi_gru.yaml", overrides={"num_threads": 1})
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    runs.prepare_process(config)
    filters = list(logger.filters)
    runs.prepare_process(config)
    runs.prepare_process(config.override({"trainer.max_epochs": 3}))  # not a process setting
    assert calls == [True] and logger.filters == filters and threads == [1]
    runs.prepare_process(config.override({"speedups": False, "num_threads": 2}))
    assert calls == [True, False] and threads == [1, 2]
    runtime._apply_once.cache_clear()
