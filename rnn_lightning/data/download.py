"""``rnn-lightning-data``: fetch a daily price CSV in the Yahoo layout that :class:`DailyPricesDataModule` reads.

``rnn-lightning-data kospi --start 2019-01-30 --end 2020-11-01 --out data/kospi.csv`` downloads the KOSPI
index (Yahoo ticker ``^KS11``) through the optional ``yfinance`` package (``pip install -e ".[data]"``)
and writes exactly ``Date,Open,High,Low,Close,Adj Close,Volume``. Without ``yfinance`` or without
network it stops with a one-line error that says how to supply the CSV by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from rnn_lightning.errors import UserInputError

# Data set name -> Yahoo ticker; another index is one more entry.
TICKERS: dict[str, str] = {"kospi": "^KS11"}
YAHOO_COLUMNS = ("Open", "High", "Low", "Close", "Adj Close", "Volume")
BY_HAND = (
    "to supply the CSV by hand, export the index's daily history from finance.yahoo.com "
    "(columns Date,Open,High,Low,Close,Adj Close,Volume) and pass it with --data.csv_path"
)


def fetch_yahoo(ticker: str, start: date, end: date) -> pd.DataFrame:
    """Daily bars of ``ticker`` from ``start`` up to and including ``end``, as ``yfinance`` returns them."""
    try:
        import yfinance
    except ImportError:
        raise UserInputError(
            f'downloading needs the optional package yfinance (pip install -e ".[data]"); {BY_HAND}'
        ) from None
    try:
        # yfinance's end is exclusive; ours is inclusive, as a person reads a date range.
        frame = yfinance.download(
            ticker,
            start=start.isoformat(),
            end=(end + timedelta(days=1)).isoformat(),
            interval="1d",
            auto_adjust=False,
            actions=False,
            progress=False,
        )
    except Exception as err:  # yfinance and its HTTP stack raise many types
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserInputError(f"could not download {ticker} ({reason}); {BY_HAND}") from None
    if frame is None or frame.empty:
        # yfinance reports a failed request (no network, unknown ticker) by returning an empty frame.
        raise UserInputError(
            f"no {ticker} rows for {start}..{end} (no network, or no trading days in that range); {BY_HAND}"
        )
    return frame


def to_yahoo_csv_frame(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """``yfinance``'s frame (dates as index, maybe a (field, ticker) column MultiIndex) -> Yahoo's columns.

    Rows without any price (Yahoo's ``null`` days) are dropped, so the CSV holds trading days only.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        level = next((i for i in range(frame.columns.nlevels) if ticker in frame.columns.get_level_values(i)), None)
        frame = frame.xs(ticker, axis=1, level=level) if level is not None else frame.droplevel(-1, axis=1)
    frame = frame.copy()
    if "Adj Close" not in frame.columns and "Close" in frame.columns:
        frame["Adj Close"] = frame["Close"]  # an adjusted download: its Close is already adjusted
    missing = [c for c in YAHOO_COLUMNS if c not in frame.columns]
    if missing:
        raise UserInputError(f"the download lacks column(s) {', '.join(missing)}; {BY_HAND}")
    index = pd.DatetimeIndex(pd.to_datetime(frame.index))
    if index.tz is not None:
        index = index.tz_localize(None)
    out = frame[list(YAHOO_COLUMNS)].astype("float64")
    out.index = index.normalize()
    out = out.dropna(how="all", subset=["Open", "High", "Low", "Close"]).sort_index()
    out = out[~out.index.duplicated(keep="last")]
    out["Volume"] = out["Volume"].fillna(0).round().astype("int64")
    out.insert(0, "Date", out.index.strftime("%Y-%m-%d"))
    return out.reset_index(drop=True)


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    """Write through a temporary file and rename it into place, so an interrupted run leaves no torn CSV."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    frame.to_csv(partial, index=False, float_format="%.6f")
    os.replace(partial, out)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2019-01-30") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``rnn-lightning-data`` command line."""
    parser = argparse.ArgumentParser(
        prog="rnn-lightning-data",
        description='Download a daily price CSV in the Yahoo layout (needs: pip install -e ".[data]").',
    )
    parser.add_argument("source", choices=sorted(TICKERS), help="which index to download")
    parser.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=_date, default=date.today(), help="last day, YYYY-MM-DD (default: today)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write, e.g. data/kospi.csv")
    return parser


def main(args: list[str] | None = None) -> None:
    """Download, convert and write; bad input or no network ends in one line on stderr and exit status 2."""
    options = build_parser().parse_args(args)
    try:
        if options.end < options.start:
            raise UserInputError(f"--end {options.end} is before --start {options.start}")
        ticker = TICKERS[options.source]
        frame = to_yahoo_csv_frame(fetch_yahoo(ticker, options.start, options.end), ticker)
        if frame.empty:
            raise UserInputError(f"no {ticker} rows with prices for {options.start}..{options.end}; {BY_HAND}")
        write_csv(frame, options.out)
    except UserInputError as err:
        print(f"rnn-lightning-data: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    first, last = frame["Date"].iloc[0], frame["Date"].iloc[-1]
    print(f"wrote {len(frame)} rows of {ticker} ({first} .. {last}) to {options.out}")


if __name__ == "__main__":
    main()
