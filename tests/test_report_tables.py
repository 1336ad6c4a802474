"""``reports.tables.write_csv`` writes the bytes ``DataFrame.to_csv(index=False, float_format="%.6f")`` writes."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnn_lightning.reports import tables
from rnn_lightning.reports.tables import fixed_decimals, write_csv


def _same_as_pandas(frame: pd.DataFrame, tmp_path: Path, decimals: int = 6) -> None:
    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    write_csv(frame, ours, decimals)
    frame.to_csv(theirs, index=False, float_format=f"%.{decimals}f")
    assert ours.read_bytes() == theirs.read_bytes()


def test_floats_are_percent_formatted_exactly() -> None:
    """Ties, near-ties, signed zeros, tiny, huge and non-finite values: the text of Python's ``%``."""
    rng = np.random.default_rng(0)
    values = [
        rng.normal(100, 30, 20_000),
        rng.normal(0, 1e-6, 20_000),
        np.round(rng.normal(0, 1, 20_000), 7),  # many exact and near ties at the 7th decimal
        (np.arange(-5000, 5000) + 0.5) / 1e6,
        (np.arange(-5000, 5000) + 0.5) / 2**20,  # exact binary ties
        rng.normal(0, 1e14, 1000),
        rng.normal(0, 1e18, 1000),
        rng.normal(0, 1, 1000).astype(np.float32).astype(np.float64),
        np.array([0.0, -0.0, -1e-9, 5e-7, 1.5e-6, 2.5e-6, 5e-324, 1e300, np.inf, -np.inf, 123456789.1234565]),
    ]
    for decimals in (6, 3, 0):
        for x in values:
            got = fixed_decimals(x, decimals).to_pylist()
            assert got == [f"%.{decimals}f" % v for v in x]
    assert fixed_decimals(np.array([1.0, np.nan]), 6).to_pylist() == ["1.000000", None]


def test_panel_like_table(tmp_path: Path) -> None:
    """A panel's predictions.csv: ids, daily dates, floats with NaN, horizon ints, splits."""
    rng = np.random.default_rng(1)
    n = 3000
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat([f"s{i}" for i in range(n // 10)], 10),
            "ds": pd.date_range("2000-01-01", periods=n, freq="D"),
            "y_hat": rng.normal(100, 30, n),
            "q0.1": rng.normal(100, 30, n).astype(np.float32),
            "y": np.where(rng.random(n) < 0.1, np.nan, rng.normal(100, 30, n)),
            "h": np.tile(np.arange(1, 11), n // 10),
            "split": np.where(np.arange(n) < n - 100, "test", "future"),
        }
    )
    _same_as_pandas(frame, tmp_path)
    _same_as_pandas(pd.concat([frame.iloc[:1000], frame.iloc[1000:]], ignore_index=True), tmp_path)  # in pieces


def test_prices_and_images_like_tables(tmp_path: Path) -> None:
    """KOSPI's ``datetime.date`` objects and empty actual close; MNIST's ints, bools and probabilities."""
    days = [datetime.date(2019, 1, 2) + datetime.timedelta(days=k) for k in range(50)]
    prices = pd.DataFrame(
        {
            "date": days,
            "actual_close": [2000.5 + k if k < 49 else np.nan for k in range(50)],
            "predicted_close": np.linspace(1990, 2100, 50),
            "split": ["train"] * 30 + ["val"] * 10 + ["test"] * 9 + ["forecast"],
        }
    )
    _same_as_pandas(prices, tmp_path)
    rng = np.random.default_rng(2)
    images = pd.DataFrame({"index": np.arange(200), "predicted": rng.integers(0, 10, 200), "ok": rng.random(200) > 0.5})
    for k in range(10):
        images[f"p{k}"] = rng.random(200)
    _same_as_pandas(images, tmp_path)


@pytest.mark.parametrize(
    "stamps",
    [
        pd.date_range("2000-01-01", periods=500, freq="h"),
        pd.date_range("2000-01-01 00:00:01", periods=500, freq="37ms"),
        pd.date_range("2000-01-01 00:00:01", periods=500, freq="1001us"),
        pd.date_range("2000-01-01 00:00:01", periods=500, freq="7ns"),
        pd.DatetimeIndex(["2000-01-01", None, "2001-03-04"] * 10),
        pd.date_range("1969-12-31 22:00", periods=500, freq="17min"),  # before the epoch
        pd.date_range("1950-01-01", periods=50, freq="MS").astype("datetime64[s]"),
        pd.date_range("1950-01-01 00:00:01.5", periods=50, freq="D").astype("datetime64[ms]"),
    ],
)
def test_datetimes(tmp_path: Path, stamps: pd.DatetimeIndex) -> None:
    """A datetime column's format follows its finest unit, NaT an empty cell, as pandas writes it."""
    _same_as_pandas(pd.DataFrame({"ds": stamps, "v": np.arange(len(stamps), dtype=np.float64)}), tmp_path)


def test_quoting_and_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings with commas, quotes and line breaks are quoted; rows are written block by block."""
    monkeypatch.setattr(tables, "BLOCK_ROWS", 7)
    frame = pd.DataFrame(
        {
            "id, with comma": ["a,b", 'say "hi"', "two\nlines", "plain", None, ""] * 5,
            "v": np.arange(30) / 7,
        }
    )
    _same_as_pandas(frame, tmp_path)
    _same_as_pandas(frame.iloc[:0], tmp_path)
    _same_as_pandas(frame.astype({"id, with comma": pd.StringDtype("python")}), tmp_path)


def test_other_kinds_are_left_to_pandas(tmp_path: Path) -> None:
    """Categoricals and nullable integers go through to_csv itself."""
    frame = pd.DataFrame({"c": pd.Categorical(["x", "y", "x"]), "n": pd.array([1, None, 3], dtype="Int64")})
    frame["f"] = [0.1, 0.25, np.nan]
    _same_as_pandas(frame, tmp_path)
