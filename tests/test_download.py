"""``rnn-lightning-data`` offline: yfinance is replaced by a stand-in module that returns canned frames."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_price_frame

from rnn_lightning.data.daily import read_price_csv
from rnn_lightning.data.download import YAHOO_COLUMNS, main

TICKER = "^KS11"


def yfinance_frame(rows: int = 12, multi_index: bool = True, adjusted: bool = False) -> pd.DataFrame:
    """What ``yfinance.download`` returns: dates as the index, fields as columns (with a ticker level
    since yfinance 0.2.48), a holiday row of NaN, columns in yfinance's own order."""
    prices = make_price_frame(rows).set_index("Date")
    prices.index = pd.DatetimeIndex(pd.to_datetime(prices.index), name="Date")
    prices.iloc[3] = np.nan  # a day Yahoo lists without prices
    prices = prices[["Adj Close", "Close", "High", "Low", "Open", "Volume"]]
    if adjusted:
        prices = prices.drop(columns="Adj Close")
    if multi_index:
        prices.columns = pd.MultiIndex.from_product([prices.columns, [TICKER]], names=["Price", "Ticker"])
    return prices


@pytest.fixture
def fake_yfinance(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Install a ``yfinance`` stand-in; set ``.result`` (a frame or an exception) before calling main."""
    calls: list[dict] = []
    state = types.SimpleNamespace(result=None, calls=calls)

    def download(ticker: str, **kwargs):
        calls.append({"ticker": ticker, **kwargs})
        if isinstance(state.result, Exception):
            raise state.result
        return state.result

    monkeypatch.setitem(sys.modules, "yfinance", types.SimpleNamespace(download=download))
    return state


@pytest.mark.parametrize(
    "multi_index, adjusted",
    [(True, False), (False, False), (True, True)],
    ids=["multiindex", "flat", "adjusted"],
)
def test_download_writes_yahoo_csv(
    fake_yfinance, tmp_path: Path, capsys: pytest.CaptureFixture, multi_index: bool, adjusted: bool
) -> None:
    canned = yfinance_frame(multi_index=multi_index, adjusted=adjusted)
    fake_yfinance.result = canned
    out = tmp_path / "sub" / "kospi.csv"
    main(["kospi", "--start", "2019-01-30", "--end", "2019-02-14", "--out", str(out)])

    call = fake_yfinance.calls[0]
    assert call["ticker"] == TICKER
    assert (call["start"], call["end"]) == ("2019-01-30", "2019-02-15")  # yfinance's end is exclusive
    assert out.read_text().splitlines()[0] == "Date,Open,High,Low,Close,Adj Close,Volume"

    read = read_price_csv(out, list(YAHOO_COLUMNS))
    flat = canned.droplevel("Ticker", axis=1) if multi_index else canned
    expected = flat.dropna(how="all")
    assert len(read) == len(canned) - 1  # the NaN day is not a trading day
    assert list(read["Date"]) == list(expected.index)
    for column in YAHOO_COLUMNS:
        source = expected["Close" if column == "Adj Close" and adjusted else column]
        np.testing.assert_allclose(read[column].to_numpy(), source.to_numpy(np.float64), atol=5e-6)
    assert f"wrote {len(read)} rows of {TICKER}" in capsys.readouterr().out


def test_downloaded_csv_feeds_the_data_module(fake_yfinance, tmp_path: Path) -> None:
    from rnn_lightning.data.daily import DailyPricesDataModule

    fake_yfinance.result = yfinance_frame(rows=40)
    out = tmp_path / "kospi.csv"
    main(["kospi", "--start", "2019-01-30", "--end", "2019-03-30", "--out", str(out)])
    datamodule = DailyPricesDataModule(str(out), split=20)
    datamodule.setup("fit")
    assert datamodule.num_windows == 39 - 5


@pytest.mark.parametrize(
    "result, reason",
    [
        (pd.DataFrame(), "no network"),
        (ConnectionError("Failed to resolve 'query1.finance.yahoo.com'"), "resolve"),
    ],
    ids=["empty-frame", "exception"],
)
def test_network_failure_is_one_line(
    fake_yfinance, tmp_path: Path, capsys: pytest.CaptureFixture, result, reason: str
) -> None:
    """yfinance reports a failed request by returning an empty frame (or, in some versions, raising)."""
    fake_yfinance.result = result
    out = tmp_path / "kospi.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["kospi", "--start", "2019-01-30", "--end", "2020-11-01", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("rnn-lightning-data: error:")
    assert reason in err and "by hand" in err and "--data.csv_path" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_yfinance_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "yfinance", None)  # import yfinance -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["kospi", "--start", "2019-01-30", "--out", str(tmp_path / "kospi.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert 'pip install -e ".[data]"' in err and "by hand" in err


def test_end_before_start(fake_yfinance, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["kospi", "--start", "2020-01-30", "--end", "2019-01-01", "--out", str(tmp_path / "k.csv")])
    assert exit_info.value.code == 2
    assert "before --start" in capsys.readouterr().err
    assert not fake_yfinance.calls
