"""What real Yahoo exports contain is read as the clean file would be, and said so; then it trains.

Each quirk is written into a copy of one synthetic CSV; ``read_price_csv`` must return exactly the clean
file's frame (values and order), warn where rows were dropped or moved, and a short fit must run on it.
Duplicate dates are an error that names the first repeated row: which of two prices is right is not
something to guess.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONFIGS, kospi_args, make_price_frame, only_version_dir, run_cli

from rnn_lightning.data.daily import read_price_csv
from rnn_lightning.errors import UserInputError

COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
NULL_ROW = "{date},null,null,null,null,null,null"


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _with_null_rows(path: Path) -> None:
    lines = _csv_text(make_price_frame()).splitlines()
    # Yahoo writes 'null' rows for days without trading; these dates are not in the clean frame.
    for line_no, date in ((5, "2019-02-02"), (20, "2019-02-23"), (40, "2019-03-23")):
        lines.insert(line_no, NULL_ROW.format(date=date))
    path.write_text("\n".join(lines) + "\n")


def _descending(path: Path) -> None:
    path.write_text(_csv_text(make_price_frame().iloc[::-1]))


def _shuffled(path: Path) -> None:
    path.write_text(_csv_text(make_price_frame().sample(frac=1.0, random_state=0)))


def _bom_crlf(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + _csv_text(make_price_frame()).replace("\n", "\r\n").encode())


def _extra_columns(path: Path) -> None:
    frame = make_price_frame()
    frame.insert(1, "Ticker", "^KS11")
    frame["Dividends"] = 0.0
    frame["Note"] = "n/a"
    path.write_text(_csv_text(frame))


def _everything(path: Path) -> None:
    """All of it at once, as an exported-then-edited file might be."""
    frame = make_price_frame()
    frame["Note"] = "x"
    lines = _csv_text(frame.iloc[::-1]).splitlines()
    lines.insert(3, NULL_ROW.format(date="2019-05-04") + ",")
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())


# name -> (writer, warning the user must see or None)
QUIRKS: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "yahoo-null-rows": (_with_null_rows, r"dropped 3 row\(s\) without values \(Yahoo 'null' rows\), first at line 6"),
    "descending-dates": (_descending, None),  # newest first is how some sites export; sorting needs no warning
    "unordered-dates": (_shuffled, r"rows were not in date order; sorted them by Date"),
    "bom-and-crlf": (_bom_crlf, None),
    "extra-columns": (_extra_columns, None),
    "all-at-once": (_everything, r"dropped 1 row\(s\)"),
}


def _read(path: Path) -> tuple[pd.DataFrame, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = read_price_csv(path, COLUMNS)
    return frame, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("quirk", QUIRKS)
def test_read_as_the_clean_file(quirk: str, tmp_path: Path) -> None:
    write, warning = QUIRKS[quirk]
    clean = tmp_path / "clean.csv"
    make_price_frame().to_csv(clean, index=False)
    messy = tmp_path / "messy.csv"
    write(messy)
    expected, clean_warnings = _read(clean)
    got, messages = _read(messy)
    assert clean_warnings == []
    pd.testing.assert_frame_equal(got, expected)
    assert got["Date"].is_monotonic_increasing and list(got.columns) == ["Date", *COLUMNS]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and "messy.csv" in messages[0]
        assert re.search(warning, messages[0]), messages


@pytest.mark.parametrize("quirk", ["yahoo-null-rows", "all-at-once"])
def test_quirky_csv_trains(quirk: str, tmp_path: Path) -> None:
    """A short fit then test on the messy file; the file itself is only read."""
    csv = tmp_path / "messy.csv"
    QUIRKS[quirk][0](csv)
    before = hashlib.sha256(csv.read_bytes()).hexdigest()
    root = tmp_path / "runs"
    common = kospi_args(CONFIGS / "kospi_gru.yaml", csv, root, "--plots.enabled", "false")
    with pytest.warns(UserWarning, match="dropped"):
        run_cli("fit", *common, "--trainer.max_epochs", "2")
    run_dir = only_version_dir(root)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert hashlib.sha256(csv.read_bytes()).hexdigest() == before


def test_duplicate_dates_name_the_first_repeat(tmp_path: Path) -> None:
    frame = make_price_frame()
    frame = pd.concat([frame.iloc[:12], frame.iloc[[9]], frame.iloc[12:]], ignore_index=True)
    path = tmp_path / "dup.csv"
    frame.to_csv(path, index=False)
    date = make_price_frame()["Date"][9]
    # Row 12 (0-based) repeats row 9; in an editor it is line 14.
    with pytest.raises(UserInputError, match=rf"dup\.csv: line 14: duplicate date {date}; remove the repeated row"):
        read_price_csv(path, COLUMNS)


def test_duplicate_dates_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = make_price_frame()
    path = tmp_path / "dup.csv"
    pd.concat([frame, frame.iloc[[-1]]], ignore_index=True).to_csv(path, index=False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            CONFIGS / "kospi_gru.yaml",
            "--data.csv_path",
            path,
            "--trainer.default_root_dir",
            tmp_path,
            "--data.split",
            "50",
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"line 82: duplicate date {frame['Date'].iloc[-1]}" in err[0]


def test_values_survive_exactly(tmp_path: Path) -> None:
    """BOM, CRLF and extra columns change nothing in the numbers that reach the model."""
    path = tmp_path / "messy.csv"
    _everything(path)
    frame, _ = _read(path)
    clean = make_price_frame()
    np.testing.assert_array_equal(frame["Close"].to_numpy(), clean["Close"].to_numpy())
    np.testing.assert_array_equal(frame["Volume"].to_numpy(), clean["Volume"].to_numpy(np.float64))
