"""No deprecation warning from this project's own code: API drift in torch, Lightning or jsonargparse shows up
here, not at their next major release. pyproject.toml filters only warnings raised from those libraries' code,
and jsonargparse shows one warning per deprecated API unless told otherwise, so the CLI runs here record all."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from helpers import CONFIGS, run_cli, write_price_csv

import rnn_lightning

PACKAGE = Path(rnn_lightning.__file__).resolve().parent
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def own_deprecations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *commands: list[object]) -> list[str]:
    """Every deprecation warning the commands raise from a file of the rnn_lightning package."""
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # not only the first per deprecated API
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for command in commands:
            run_cli(*command)
    return sorted(
        {
            f"{Path(w.filename).relative_to(PACKAGE.parent)}:{w.lineno}: {str(w.message).strip()}"
            for w in caught
            if issubclass(w.category, DEPRECATIONS) and Path(w.filename).resolve().is_relative_to(PACKAGE)
        }
    )


def test_fit_test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_price_csv(tmp_path / "prices.csv")
    common = ["--config", CONFIGS / "kospi_gru.yaml", "--data.csv_path", csv, "--data.split", "50"]
    common += ["--data.val_size", "10", "--trainer.default_root_dir", tmp_path / "runs"]
    last = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    fit = ["fit", *common, "--trainer.max_epochs", "1"]
    test, predict = ["test", *common, "--ckpt_path", last], ["predict", *common, "--ckpt_path", last]
    assert own_deprecations(tmp_path, monkeypatch, fit, test, predict) == []


def test_backtest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_price_csv(tmp_path / "prices.csv")
    backtest = ["backtest", "--config", CONFIGS / "kospi_gru.yaml", "--data.csv_path", csv, "--data.split", "30"]
    backtest += ["--trainer.default_root_dir", tmp_path / "runs", "--trainer.max_epochs", "1"]
    backtest += ["--plots.enabled", "false", "--backtest.folds", "2", "--backtest.test_size", "5"]
    assert own_deprecations(tmp_path, monkeypatch, backtest) == []


def test_tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_price_csv(tmp_path / "prices.csv", rows=100)
    space = tmp_path / "space.yaml"
    space.write_text("model.hidden_size: {low: 2, high: 4}\n")
    tune = ["tune", "--config", CONFIGS / "kospi_gru_returns.yaml", "--data.csv_path", csv, "--data.split", "30"]
    tune += ["--trainer.default_root_dir", tmp_path / "runs", "--trainer.max_epochs", "1", "--tune.space", space]
    tune += ["--tune.trials", "2", "--tune.holdout", "5", "--tune.reps", "100"]
    tune += ["--backtest.folds", "2", "--backtest.test_size", "5"]
    assert own_deprecations(tmp_path, monkeypatch, tune) == []
