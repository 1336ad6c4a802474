"""A tune study's data signature comes from the data module itself (``fingerprint``), for every kind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import write_price_csv

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.panel.module import PanelDataModule
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.tune.study import data_digest


def _panel_csv(path: Path, bump: float = 0.0, shuffle: bool = False) -> Path:
    rows = []
    for k, uid in enumerate(("a", "b")):
        ds = pd.date_range("2015-01-01", periods=40, freq="MS")
        y = 100.0 * (k + 1) + np.arange(40) + 5 * np.sin(np.arange(40) / 2)
        rows.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y}))
    frame = pd.concat(rows, ignore_index=True)
    frame.loc[7, "y"] += bump
    (frame.sample(frac=1.0, random_state=0) if shuffle else frame).to_csv(path, index=False)
    return path


def _panel_digest(path: Path) -> str:
    dm = PanelDataModule(source=str(path), horizon=6, input_length=12)
    dm.setup("fit")
    return data_digest(dm)


def test_a_price_study_keeps_its_signature(tmp_path: Path) -> None:
    """The price fingerprint is what studies were signed with before: every close, then every raw feature."""
    dm = DailyPricesDataModule(csv_path=str(write_price_csv(tmp_path / "p.csv")), split=40, val_size=5)
    dm.setup("fit")
    frame = pd.read_csv(tmp_path / "p.csv")
    close = frame["Close"].to_numpy(np.float64).tobytes()
    raw = frame[list(dm.features)].to_numpy(np.float64).tobytes()
    assert data_digest(dm) == hashlib.sha256(close + raw).hexdigest()[:16]


def test_a_panel_study_changes_with_its_values_not_with_row_order(tmp_path: Path) -> None:
    base = _panel_digest(_panel_csv(tmp_path / "a.csv"))
    assert _panel_digest(_panel_csv(tmp_path / "b.csv", shuffle=True)) == base  # rows are sorted on reading
    assert _panel_digest(_panel_csv(tmp_path / "c.csv", bump=0.5)) != base  # one value changed


def test_an_image_study_is_signed_by_its_data_set() -> None:
    expected = hashlib.sha256(b"mnist_sample").hexdigest()[:16]
    assert data_digest(RowMNISTDataModule(dataset="mnist_sample")) == expected
