"""Data kinds are objects the workflows ask: a toy kind added here runs fit, test, predict and backtest.

The toy kind ("waves") is defined in this file only: its own name, its own report (a figure and a table of
its own) and its own data module. Nothing in rnn_lightning names it, so every workflow that runs on it asks
the kind object instead of comparing kind names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import CONFIGS, kospi_args, only_version_dir, run_cli
from matplotlib.figure import Figure

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.kinds import KINDS, DataKind, kind_named, kind_of, register
from rnn_lightning.kinds.prices import DailyPrices

ROOT = Path(__file__).resolve().parent.parent
CALLS: list[str] = []


def _figures(model: Any, datamodule: Any, stage: str, max_images: int) -> dict[str, Figure]:
    CALLS.append(f"figures:{stage}")
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot(datamodule.close.numpy())
    return {f"waves_{stage}": figure}


def _table(datamodule: Any, outputs: dict[str, Any]) -> pd.DataFrame:
    CALLS.append("table")
    prediction = outputs["prediction"].double().numpy().reshape(-1)
    return pd.DataFrame({"step": np.arange(len(prediction)), "wave_height": prediction})


WAVES_REPORT = SimpleNamespace(figures=_figures, table=_table, summary=lambda table: f"{len(table)} wave rows")


class Waves(DailyPrices):
    """A toy kind: a regression on a series, walked forward like prices, with a report of its own."""

    name = "toy_waves"
    report = WAVES_REPORT  # type: ignore[assignment]


register(Waves())


class WavesDataModule(DailyPricesDataModule):
    """A data module of the toy kind (its reading is the daily CSV's)."""

    kind = "toy_waves"


def write_waves(path: Path, rows: int = 90) -> Path:
    t = np.arange(rows, dtype=np.float64)
    level = 100 + 10 * np.sin(t / 4)
    frame = pd.DataFrame(
        {
            "Date": pd.bdate_range("2020-01-01", periods=rows).strftime("%Y-%m-%d"),
            "Open": level,
            "High": level + 1,
            "Low": level - 1,
            "Close": level + 0.5,
            "Adj Close": level + 0.5,
            "Volume": 1000 + t,
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_the_registry_names_every_kind_and_refuses_an_unknown_one() -> None:
    assert {"daily_prices", "row_images", "toy_waves"} <= set(KINDS)
    assert kind_named("daily_prices").walks_forward and not kind_named("row_images").walks_forward
    with pytest.raises(UserInputError, match=r"unknown data kind 'nope'; the kinds are .*daily_prices"):
        kind_named("nope")
    assert kind_of(WavesDataModule()).report is WAVES_REPORT


def test_a_kind_of_another_class_under_a_taken_name_is_refused() -> None:
    class Impostor(DataKind):
        name = "daily_prices"

    with pytest.raises(ValueError, match="registered already"):
        register(Impostor())


def test_a_toy_kind_runs_fit_test_predict_and_backtest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_waves(tmp_path / "waves.csv")
    data = ["--data.class_path", "test_kinds.WavesDataModule"]
    base = [*kospi_args(CONFIGS / "kospi_gru.yaml", csv, tmp_path / "runs"), *data, "--trainer.max_epochs", "2"]
    CALLS.clear()
    run_cli("fit", *base)
    run_dir = only_version_dir(tmp_path / "runs")
    assert (run_dir / "waves_fit.png").is_file()  # the toy report drew the fit's figure
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run_cli("test", *base, "--ckpt_path", ckpt)
    out = capsys.readouterr().out
    assert re.search(r"test_rmse\s", out) and re.search(r"test_naive_rmse\s", out)
    run_cli("predict", *base, "--ckpt_path", ckpt)
    assert "wave rows" in capsys.readouterr().out
    predicted = sorted((tmp_path / "runs" / "lightning_logs").glob("version_*/predictions.csv"))[-1]
    table = pd.read_csv(predicted)
    assert list(table.columns) == ["step", "wave_height"] and len(table) > 0
    assert {"figures:fit", "figures:test", "table"} <= set(CALLS)
    run_cli("backtest", *base, "--backtest.folds", "2", "--backtest.test_size", "5")
    summary = json.loads(sorted((tmp_path / "runs" / "lightning_logs").glob("version_*/summary.json"))[-1].read_text())
    assert summary["folds"] == 2
