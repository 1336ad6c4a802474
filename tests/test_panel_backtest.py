"""Backtest and tune on panels: rolling origins over the last k horizons of every series, through the CLI.

A tiny synthetic monthly panel (three series of different lengths and levels, one common end), the shipped
Tourism config with small overrides, 1 epoch per fold. The per-date losses, the pooled MASE, the MASE
scales and the Diebold-Mariano statistic are recomputed here from ``backtest.csv`` and the panel itself
with pandas, numpy and scipy; the folds' views are checked to keep every test point out of their
training windows and scaling.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import only_version_dir, run_cli
from scipy import stats

from rnn_lightning.backtest import BacktestSettings
from rnn_lightning.backtest.panel_plan import plan_panel_folds
from rnn_lightning.data.panel.module import PanelDataModule

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tourism_monthly_val.yaml"  # validation per fold
LENGTHS = {"a": 40, "b": 48, "c": 60}
H, L, M, K = 6, 12, 12, 2
END = "2015-12-01"


def make_panel(seed: int = 0) -> pd.DataFrame:
    """Seasonal random walks at levels 10, 100, 1000, every series ending on ``END``."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (uid, n) in enumerate(sorted(LENGTHS.items())):
        ds = pd.date_range(end=END, periods=n, freq="MS")
        y = 10.0 ** (k + 1) * (1 + 0.02 * np.cumsum(rng.normal(0, 1, n)) + 0.2 * np.sin(np.arange(n) * np.pi / 6))
        parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y.round(4)}))
    return pd.concat(parts, ignore_index=True)


def panel_args(command: str, csv: Path, root: Path, *extra: object) -> list[object]:
    return [
        command,
        "--config",
        CONFIG,
        "--data.source",
        csv,
        "--data.horizon",
        H,
        "--data.input_length",
        L,
        "--data.season_length",
        M,
        "--data.batch_size",
        16,
        "--data.max_windows_per_series",
        8,
        "--model.hidden_size",
        8,
        "--model.series_embedding",
        2,
        "--trainer.max_epochs",
        1,
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        root,
        "--num_threads",
        1,
        *extra,
    ]


@pytest.fixture(scope="module")
def panel_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("panel") / "panel.csv"
    make_panel().sample(frac=1.0, random_state=2).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def backtested(panel_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    run_cli(*panel_args("backtest", panel_csv, root, "--backtest.folds", K))
    return only_version_dir(root)


def test_rolling_origins_are_the_last_horizons_of_every_series(backtested: Path) -> None:
    for name in ("backtest.csv", "folds.csv", "series.csv", "date_losses.csv", "summary.json"):
        assert (backtested / name).is_file(), name
    table = pd.read_csv(backtested / "backtest.csv")
    assert list(table.columns)[:8] == ["unique_id", "ds", "fold", "h", "actual", "predicted", "snaive", "naive"]
    assert len(table) == K * H * len(LENGTHS)
    panel = make_panel()
    for (uid, fold), rows in table.groupby(["unique_id", "fold"]):
        series = panel[panel["unique_id"] == uid].reset_index(drop=True)
        block = series.iloc[len(series) - (K - fold) * H : len(series) - (K - 1 - fold) * H]  # origin_j = end - (K-j)H
        assert list(rows["ds"]) == list(block["ds"].dt.strftime("%Y-%m-%d")), (uid, fold)
        np.testing.assert_allclose(rows["actual"], block["y"], rtol=1e-6)
        assert list(rows["h"]) == list(range(1, H + 1))
        before = series[series["ds"] < block["ds"].iloc[0]]["y"].to_numpy()
        np.testing.assert_allclose(rows["naive"], before[-1], rtol=1e-6)  # the last value before the origin
        np.testing.assert_allclose(rows["snaive"], before[-M:][:H], rtol=1e-6)  # the same months a year before
        scale = np.mean(np.abs(before[M:] - before[:-M]))  # the history's in-sample seasonal naive error
        np.testing.assert_allclose(rows["mase_scale"], scale, rtol=1e-5)
    folds = pd.read_csv(backtested / "folds.csv")
    assert list(folds["fold"]) == list(range(K))
    assert {"mase", "smape", "rmse", "snaive_mase", "snaive_smape", "snaive_rmse", "mase_ratio"} <= set(folds.columns)
    series_table = pd.read_csv(backtested / "series.csv")
    assert sorted(series_table["unique_id"]) == sorted(LENGTHS)
    assert (series_table["points"] == K * H).all()


def test_pooled_metrics_and_per_date_losses_match_pandas(backtested: Path) -> None:
    table = pd.read_csv(backtested / "backtest.csv")
    summary = json.loads((backtested / "summary.json").read_text())
    loss = (table["predicted"] - table["actual"]).abs() / table["mase_scale"]
    snaive = (table["snaive"] - table["actual"]).abs() / table["mase_scale"]
    mase = loss.groupby(table["unique_id"]).mean().mean()
    assert summary["mase"] == pytest.approx(mase, rel=1e-6)
    assert summary["snaive_mase"] == pytest.approx(snaive.groupby(table["unique_id"]).mean().mean(), rel=1e-6)
    assert summary["mase_ratio"] == pytest.approx(summary["mase"] / summary["snaive_mase"], rel=1e-9)
    smape = (
        200 * (table["predicted"] - table["actual"]).abs() / (table["predicted"].abs() + table["actual"].abs())
    ).mean()
    assert summary["smape"] == pytest.approx(smape, rel=1e-6)
    assert summary["rmse"] == pytest.approx(math.sqrt(((table["predicted"] - table["actual"]) ** 2).mean()), rel=1e-6)
    folds = pd.read_csv(backtested / "folds.csv")
    for k, rows in table.groupby("fold"):
        fold_loss = loss[rows.index].groupby(rows["unique_id"]).mean().mean()
        assert float(folds.loc[folds["fold"] == k, "mase"].iloc[0]) == pytest.approx(fold_loss, rel=1e-5)

    # One loss per forecast date: the mean over the series forecast that date.
    expected = pd.DataFrame({"ds": table["ds"], "model": loss, "snaive": snaive}).groupby("ds").mean().sort_index()
    got = pd.read_csv(backtested / "date_losses.csv").set_index("date")
    assert list(got.index) == list(expected.index) and len(got) == K * H
    assert (got["series"] == len(LENGTHS)).all()
    np.testing.assert_allclose(got["model"], expected["model"], rtol=1e-6)
    np.testing.assert_allclose(got["snaive"], expected["snaive"], rtol=1e-6)
    assert summary["dates"] == K * H and summary["date_key"] == "ds"
    assert summary["mean_date_loss"] == pytest.approx(expected["model"].mean(), rel=1e-6)


def test_dm_statistic_on_per_date_losses_by_hand(backtested: Path) -> None:
    """HLN-corrected DM on the per-date loss differentials, with the H-1 lags of one origin's dates."""
    table = pd.read_csv(backtested / "backtest.csv")
    loss = (table["predicted"] - table["actual"]).abs() / table["mase_scale"]
    snaive = (table["snaive"] - table["actual"]).abs() / table["mase_scale"]
    per_date = pd.DataFrame({"ds": table["ds"], "m": loss, "s": snaive}).groupby("ds").mean().sort_index()
    d = (per_date["s"] - per_date["m"]).to_numpy()
    n = len(d)
    c = d - d.mean()
    gamma = [np.sum(c[k:] * c[: n - k]) / n for k in range(H)]
    # H - 1 lags (one origin's dates), fewer while the truncated long-run variance is not positive.
    lags = next((q for q in range(H - 1, 0, -1) if gamma[0] + 2 * sum(gamma[1 : q + 1]) > 0), 0)
    h = lags + 1
    variance = gamma[0] + 2 * sum(gamma[1:h])
    statistic = d.mean() / math.sqrt(variance / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    summary = json.loads((backtested / "summary.json").read_text())
    assert summary["dm_lags"] == lags
    assert summary["dm_statistic"] == pytest.approx(statistic, rel=1e-5)
    assert summary["dm_pvalue"] == pytest.approx(2 * stats.t.sf(abs(statistic), df=n - 1), rel=1e-5, abs=1e-12)


def test_no_test_point_reaches_a_folds_training_windows_or_scaling(panel_csv: Path) -> None:
    data = PanelDataModule(source=str(panel_csv), horizon=H, input_length=L, season_length=M)
    panel = make_panel()
    folds = plan_panel_folds(data, BacktestSettings(folds=K))
    assert [f.cut for f in folds] == [(K - 1 - j) * H for j in range(K)]
    for fold in folds:
        view = fold.data
        layout, splits = view.splits.layout, view.splits
        loc = view.fitted_scaling()["loc"].numpy()
        scale = view.fitted_scaling()["scale"].numpy()
        for i, uid in enumerate(layout.ids):
            series = panel[panel["unique_id"] == uid].reset_index(drop=True)
            test_start = series["ds"].iloc[len(series) - (K - fold.index) * H]
            test = splits.test
            origins = test.origin[test.series == i]
            assert list(layout.timestamps[origins[0] + np.arange(H)]) == list(
                series["ds"].iloc[len(series) - (K - fold.index) * H :][:H]
            )
            train = splits.train.origin[splits.train.series == i]
            start = layout.offsets[i]
            touched = (train[:, None] + np.arange(-L, H)).reshape(-1)  # every input and target step
            touched = touched[touched >= start]
            if len(touched):
                assert layout.timestamps[touched].max() < test_start - pd.DateOffset(months=H)  # before val, too
            assert layout.timestamps[layout.offsets[i + 1] - 1] < test_start + pd.DateOffset(months=H)
            fit_rows = series[series["ds"] < test_start - pd.DateOffset(months=H)]["y"]  # the training part only
            assert loc[i] == pytest.approx(fit_rows.mean(), rel=1e-5)
            assert scale[i] == pytest.approx(fit_rows.std(ddof=0), rel=1e-4)


def test_more_folds_than_the_longest_series_allows_is_one_line(
    panel_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*panel_args("backtest", panel_csv, root, "--backtest.folds", 7))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rnn-lightning: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(
        r"backtest.folds 7 x horizon 6 leave no series 13 training .* 'c' \(60 steps\), keeps 12 .* 6 folds", lines[0]
    )
    assert not (root / "lightning_logs").exists()


def test_series_too_short_for_the_earliest_folds_sit_them_out(panel_csv: Path, tmp_path: Path) -> None:
    """5 folds of 6 steps, validation on: fold j leaves each series 36 - 6 j steps fewer than its length for
    training, so 'b' (48 steps) joins from fold 1 and 'a' (40) from fold 2; 'c' (60) is in every fold."""
    root = tmp_path / "runs"
    with pytest.warns(
        UserWarning, match=r"2 of 3 series are too short for the earliest folds .* 'a' \(40 steps\), 'b'"
    ):
        run_cli(*panel_args("backtest", panel_csv, root, "--backtest.folds", 5))
    run = only_version_dir(root)
    table = pd.read_csv(run / "backtest.csv")
    members = table.groupby("fold")["unique_id"].unique().map(sorted).to_dict()
    assert members == {0: ["c"], 1: ["b", "c"], 2: ["a", "b", "c"], 3: ["a", "b", "c"], 4: ["a", "b", "c"]}
    panel = make_panel()
    for (fold, uid), rows in table.groupby(["fold", "unique_id"]):
        series = panel[panel["unique_id"] == uid].reset_index(drop=True)
        origin = len(series) - (5 - fold) * H  # the fold's test block: the same H steps as with every series in
        expected = series["y"].to_numpy()[origin : origin + H]
        np.testing.assert_allclose(rows.sort_values("h")["actual"].to_numpy(), expected, rtol=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 5 and summary["series"] == 3


def test_tune_on_a_panel_scores_by_the_backtest_and_judges_on_per_date_losses(panel_csv: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("model.hidden_size: {low: 4, high: 8}\n")
    root = tmp_path / "runs"
    run_cli(
        *panel_args(
            "tune",
            panel_csv,
            root,
            "--backtest.folds",
            K,
            "--tune.space",
            space,
            "--tune.trials",
            2,
            "--tune.reps",
            200,
        )
    )
    run_dir = only_version_dir(root)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["objective"] == "mase_ratio" and summary["completed"] == 2
    assert 0.0 <= summary["spa_pvalue"] <= 1.0 and summary["tuning_days"] == K * H
    assert "seasonal naive" in summary["verdict"]
    losses = pd.read_csv(run_dir / "losses.csv")
    assert list(losses.columns) == ["date", "snaive", "trial_0", "trial_1"] and len(losses) == K * H
    # The tuning period is every series less its last horizon, which only the hold-out refit forecasts.
    held = pd.read_csv(run_dir / "holdout.csv")
    last = sorted(pd.date_range(end=END, periods=H, freq="MS").strftime("%Y-%m-%d"))
    assert sorted(held["ds"].unique()) == last and len(held) == H * len(LENGTHS)
    assert losses["date"].max() < last[0]
    assert summary["holdout_days"] == H and summary["holdout_mase_ratio"] > 0
    best = summary["best_trial"]
    assert summary["best_score"] == pytest.approx(losses[f"trial_{best}"].mean() / losses["snaive"].mean(), rel=1e-6)


# --- --backtest.resume: a stopped backtest continues in its folder ---------------------------------------------


def test_resume_after_a_stop_gives_the_uninterrupted_run(
    panel_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 folds in one run; 3 folds stopped after fold 2's fit, then resumed (the CSV moved): the same outputs, byte
    for byte, and folds 0 and 1 read back, not trained again; the stopped fold's folder starts again."""
    import rnn_lightning.backtest.panel_run as panel_run

    fit = panel_run.runs.fit
    fitted: list[str] = []  # the fold folders of the fits run
    stop: set[str] = set()  # the folds whose process is "killed" right after their fit

    def fit_then_stop(run, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        fit(run, *args, **kwargs)
        fitted.append(run.trainer.logger.version)
        if run.trainer.logger.version in stop:  # before the fold's files: its logs and checkpoints stay
            raise RuntimeError("killed after fold 2's fit")

    monkeypatch.setattr(panel_run.runs, "fit", fit_then_stop)
    run_cli(*panel_args("backtest", panel_csv, tmp_path / "one", "--backtest.folds", 3))
    one = only_version_dir(tmp_path / "one")
    stop.add("fold_02")
    with pytest.raises(RuntimeError, match="killed"):
        run_cli(*panel_args("backtest", panel_csv, tmp_path / "two", "--backtest.folds", 3))
    two = only_version_dir(tmp_path / "two")
    assert (two / "fold_02" / "checkpoints").is_dir() and not (two / "fold_02" / "panel_fold.json").exists()
    assert not (two / "summary.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in sorted(two.glob("fold_0[01]/*")) if p.is_file()}
    assert len(finished) >= 4  # predictions.csv and panel_fold.json of folds 0 and 1, and their event files
    assert fitted == ["fold_00", "fold_01", "fold_02"] * 2
    (two / "fold_02" / "panel_fold.json").write_text('{"fold": 2, "cut"')  # torn (never so when written atomically)
    stop.clear()
    fitted.clear()
    moved = tmp_path / "moved.csv"
    moved.write_bytes(panel_csv.read_bytes())  # where the data is read from is not signed, its values are
    capsys.readouterr()
    run_cli(*panel_args("backtest", moved, tmp_path / "two", "--backtest.folds", 3, "--backtest.resume", two))
    assert fitted == ["fold_02"]
    assert f"backtest: resuming {two}: 2 of 3 folds read back, 1 left to train (fold 2)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert only_version_dir(tmp_path / "two") == two  # no new run folder
    for name in ("backtest.csv", "folds.csv", "series.csv", "date_losses.csv", "summary.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    for k in range(3):
        assert (two / f"fold_0{k}" / "predictions.csv").read_bytes() == (
            one / f"fold_0{k}" / "predictions.csv"
        ).read_bytes()
    assert sorted(p.name for p in (two / "fold_02" / "checkpoints").iterdir()) == sorted(
        p.name for p in (one / "fold_02" / "checkpoints").iterdir()
    )  # the stopped fit's checkpoints went with its folder


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rnn-lightning: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("change", ["hidden_size", "data"])
def test_resume_refuses_a_folder_of_another_config_or_data(
    change: str, backtested: Path, panel_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, extra = panel_csv, ["--model.hidden_size", 4]
    if change == "data":
        csv, extra = tmp_path / "other.csv", []
        make_panel(seed=1).to_csv(csv, index=False)
    before = {p: p.stat().st_mtime_ns for p in backtested.rglob("*")}
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*panel_args("backtest", csv, root, "--backtest.folds", K, "--backtest.resume", backtested, *extra))
    assert exit_info.value.code == 2
    assert re.search(
        rf"backtest.resume: {re.escape(str(backtested))} was made by another config, data or backtest "
        r"settings \(fold_00/panel_fold.json is signed \w+, this command \w+\)",
        error_line(capsys),
    )
    assert {p: p.stat().st_mtime_ns for p in backtested.rglob("*")} == before
    assert not root.exists()


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_resume_refuses_a_folder_of_no_panel_backtest(
    where: str, panel_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / where
    if where == "empty":
        (folder / "fold_00").mkdir(parents=True)  # a run stopped in its first fold: nothing to read back
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*panel_args("backtest", panel_csv, root, "--backtest.folds", K, "--backtest.resume", folder))
    assert exit_info.value.code == 2
    message = "is not a folder" if where == "missing" else "holds no finished panel backtest fold"
    assert f"backtest.resume: {folder} {message}" in error_line(capsys)
    assert not root.exists() and (where == "missing") != folder.exists()
