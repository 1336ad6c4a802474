"""``rnn-lightning backtest``: the statistics against independent computations, the fold plan, no leak from a
fold's test period, every KOSPI config and target transform, shards merged equal to one run, bad settings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, SHARED_DATA, make_price_frame, run_cli, scalars, write_price_csv

from rnn_lightning.backtest import (
    BacktestSettings,
    block_bootstrap_ratio,
    check_merge,
    check_settings,
    diebold_mariano,
    direction_test,
    fold_view,
    plan_folds,
    read_fold_dirs,
)
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models import RecurrentModel

KOSPI_CONFIGS = sorted(CONFIGS.glob("kospi_*.yaml"))
GRU = CONFIGS / "kospi_gru.yaml"
PRICES = ["Open", "High", "Low", "Close", "Adj Close"]
N225 = SHARED_DATA / "indices" / "n225_daily.csv"


def backtest_args(
    csv: Path, root: Path, *extra: object, config: Path = GRU, folds: int = 3, test_size: int = 10, epochs: int = 1
) -> list[object]:
    return [
        "backtest",
        "--config",
        config,
        "--data.csv_path",
        csv,
        "--data.split",
        "30",
        "--trainer.default_root_dir",
        root,
        "--trainer.max_epochs",
        epochs,
        "--plots.enabled",
        "false",
        "--backtest.folds",
        folds,
        "--backtest.test_size",
        test_size,
        "--backtest.bootstrap",
        "200",
        *extra,
    ]


def run_dir(root: Path) -> Path:
    (found,) = sorted((root / "lightning_logs").glob("version_*"))
    return found


def level_forecast(frame: pd.DataFrame, ckpt: Path, windows: range, fit_rows: int) -> np.ndarray:
    """configs/kospi_gru.yaml's forecasts of ``windows`` (5 days of Open, High, Low, Volume -> next close) by the
    checkpoint's network, with the min-max scaling of inputs and close fitted here on the first ``fit_rows`` rows."""
    raw = frame[["Open", "High", "Low", "Volume"]].to_numpy(np.float64)
    close = frame["Close"].to_numpy(np.float64)
    low, high = raw[:fit_rows].min(axis=0), raw[:fit_rows].max(axis=0)
    x = np.stack([(raw[i : i + 5] - low) / (high - low) for i in windows])  # (W, 5, 4)
    model = RecurrentModel.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x).float()).double().numpy().reshape(-1)
    return out * (close[:fit_rows].max() - close[:fit_rows].min()) + close[:fit_rows].min()


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def t3_cdf(x: float) -> float:
    """Student's t CDF with 3 degrees of freedom, in closed form (independent of scipy)."""
    u = x / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


# --- the statistics, against hand computations ---------------------------------------------------------------


def test_diebold_mariano_by_hand() -> None:
    # d = naive - model losses = [1, 2, 3, 6]: mean 3, deviations [-2, -1, 0, 3].
    model, naive = np.zeros(4), np.array([1.0, 2.0, 3.0, 6.0])
    # h = 1: g0 = (4 + 1 + 0 + 9) / 4 = 3.5; DM = 3 / sqrt(3.5 / 4); HLN factor sqrt((4 + 1 - 2) / 4).
    dm = diebold_mariano(model, naive)
    expected = 3 / math.sqrt(3.5 / 4) * math.sqrt(3 / 4)
    assert dm["statistic"] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(2.7774603, rel=1e-7)
    assert dm["pvalue"] == pytest.approx(2 * (1 - t3_cdf(expected)), rel=1e-9)
    assert dm["pvalue_model_better"] == pytest.approx(1 - t3_cdf(expected), rel=1e-9)
    assert dm["mean_differential"] == 3.0
    # h = 2: g1 = ((-1)(-2) + 0(-1) + 3 * 0) / 4 = 0.5; V = 3.5 + 2 * 0.5 = 4.5;
    # HLN factor sqrt((4 + 1 - 4 + 2 / 4) / 4) = sqrt(0.375): DM* = 3 / sqrt(4.5 / 4) * sqrt(0.375) = sqrt(3).
    assert diebold_mariano(model, naive, horizon=2)["statistic"] == pytest.approx(math.sqrt(3), rel=1e-12)
    # Swapping the forecasts flips the sign; equal losses give no evidence at all.
    assert diebold_mariano(naive, model)["statistic"] == pytest.approx(-expected)
    assert diebold_mariano(naive, naive)["pvalue"] == 1.0


def test_binomial_direction_test_by_hand() -> None:
    naive = np.zeros(10)
    actual = np.array([1.0] * 5 + [-1.0] * 5)  # up share 0.5
    predicted = np.array([1.0] * 5 + [-1.0] * 3 + [1.0] * 2)  # 8 of 10 directions right
    out = direction_test(predicted, actual, naive)
    assert out["direction_acc"] == 0.8 and out["up_share"] == 0.5
    # P(X >= 8), X ~ Binomial(10, 1/2) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56 / 1024.
    assert out["direction_pvalue"] == pytest.approx(56 / 1024, rel=1e-12)


def test_block_bootstrap_interval() -> None:
    rng = np.random.default_rng(1)
    naive = rng.exponential(size=300)
    # Every day's model loss is 0.81 x the naive one: every resample's RMSE ratio is exactly 0.9.
    low, high, length = block_bootstrap_ratio(0.81 * naive, naive, 500, 0.95)
    assert low == pytest.approx(0.9) and high == pytest.approx(0.9) and length == round(300 ** (1 / 3))
    # Noisy losses: the interval holds the point estimate, and is reproducible.
    model = naive * rng.uniform(0.5, 1.3, size=300)
    point = math.sqrt(model.sum() / naive.sum())
    low, high, _ = block_bootstrap_ratio(model, naive, 1000, 0.9, block_length=5)
    assert low < point < high
    assert block_bootstrap_ratio(model, naive, 1000, 0.9, block_length=5)[:2] == (low, high)


# --- the fold plan ---------------------------------------------------------------------------------------------


def test_folds_tile_the_last_windows() -> None:
    folds = plan_folds(100, BacktestSettings(folds=4, test_size=10), val_size=5)
    assert [(f.origin, f.stop) for f in folds] == [(60, 70), (70, 80), (80, 90), (90, 100)]
    assert all(f.start == 0 and f.train_stop == f.origin and f.origin - f.val_start == 5 for f in folds)
    sliding = plan_folds(100, BacktestSettings(folds=4, test_size=10, window="sliding", train_size=30), val_size=0.2)
    assert [(f.start, f.val_start, f.origin) for f in sliding][0] == (30, 54, 60)
    assert all(f.origin - f.start == 30 for f in sliding)
    # A horizon of 3 days leaves 2 windows between training and test: no training target is a test day.
    assert all(f.origin - f.train_stop == 2 for f in plan_folds(100, BacktestSettings(folds=2), gap=2))
    with pytest.raises(UserInputError, match=r"10 x 10 = 100 test windows leave 0 training windows"):
        plan_folds(100, BacktestSettings(folds=10, test_size=10))
    with pytest.raises(UserInputError, match=r"need at least 50"):
        plan_folds(100, BacktestSettings(folds=6, test_size=10, window="sliding", train_size=50))


def frame_after(frame: pd.DataFrame, row: int) -> pd.DataFrame:
    """``frame`` with every row from ``row`` on changed: prices x 1.5, volume x 3."""
    changed = frame.copy()
    changed.loc[row:, PRICES] = changed.loc[row:, PRICES] * 1.5
    changed.loc[row:, "Volume"] = changed.loc[row:, "Volume"] * 3
    return changed


@pytest.mark.parametrize("window", ["expanding", "sliding"])
def test_fold_scaling_never_sees_its_test_rows(window: str, tmp_path: Path) -> None:
    """Changing every row from fold 1's first test day on leaves folds 0 and 1's fitted scaling identical."""
    frame = make_price_frame(120)
    settings = BacktestSettings(folds=3, test_size=10, window=window, train_size=60 if window == "sliding" else None)

    def scalings(frame: pd.DataFrame, name: str) -> list[dict]:
        frame.to_csv(tmp_path / name, index=False)
        data = DailyPricesDataModule(csv_path=str(tmp_path / name), split=30, val_size=5)
        data.setup("fit")
        folds = plan_folds(data.num_windows, settings, data.val_size)
        return [fold_view(data, fold).fitted_scaling() for fold in folds], folds

    before, folds = scalings(frame, "a.csv")
    first_test_day = folds[1].origin + 5  # the row fold 1's first test window predicts
    after, _ = scalings(frame_after(frame, first_test_day), "b.csv")
    for k in (0, 1):
        for key, value in before[k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after[k][key])), (k, key)
    assert not torch.equal(before[2]["feature_max"], after[2]["feature_max"])  # fold 2 trains on those rows


def test_merge_refuses_other_configs_and_gaps(tmp_path: Path) -> None:
    def fake(root: str, fold: int, signature: str) -> Path:
        folder = tmp_path / root / f"fold_{fold:02d}"
        folder.mkdir(parents=True)
        (folder / "predictions.csv").write_text("date,fold,actual,predicted,naive\n")
        meta = {"fold": fold, "signature": signature, "settings": {"folds": 3}}
        (folder / "fold.json").write_text(json.dumps(meta))
        return folder.parent

    a, b = fake("a", 0, "s1"), fake("b", 1, "s2")
    with pytest.raises(UserInputError, match="different configs"):
        check_merge(read_fold_dirs([a, b]))
    c = fake("c", 1, "s1")
    with pytest.raises(UserInputError, match=r"fold\(s\) \[2\] of 3 are missing"):
        check_merge(read_fold_dirs([a, c]))
    with pytest.raises(UserInputError, match=r"more than one folder"):
        check_merge(read_fold_dirs([a, c, fake("d", 1, "s1")]))


# --- the real CLI --------------------------------------------------------------------------------------------


def test_backtest_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_price_csv(tmp_path / "prices.csv", rows=100)  # 95 windows; the last 30 are tested
    run_cli(*backtest_args(csv, tmp_path / "runs", "--plots.enabled", "true"))
    out = run_dir(tmp_path / "runs")
    table = pd.read_csv(out / "backtest.csv")
    assert list(table.columns) == ["date", "fold", "actual", "predicted", "naive"]
    assert len(table) == 30 and list(table["fold"]) == [0] * 10 + [1] * 10 + [2] * 10
    frame = make_price_frame(100)
    assert list(table["date"]) == list(frame["Date"].iloc[-30:])  # the last 30 days, in order
    assert np.allclose(table["actual"], frame["Close"].iloc[-30:]) and np.allclose(
        table["naive"], frame["Close"].iloc[-31:-1]
    )
    folds = pd.read_csv(out / "folds.csv")
    assert {
        "train_start",
        "train_end",
        "test_start",
        "test_end",
        "rmse",
        "naive_rmse",
        "rmse_ratio",
        "direction_acc",
        "up_share",
    } <= set(folds.columns)
    assert list(folds["test_start"]) == list(table.groupby("fold")["date"].first())
    assert (folds["train_end"] < folds["test_start"]).all()
    # Each fold against the CSV alone: 95 windows, fold k tests windows 65 + 10k .. 74 + 10k (rows 70 + 10k ..),
    # trains on the 45 + 10k before its 20 validation windows; the scaling is fitted on those windows' 50 + 10k
    # rows. The predictions are the fold's best checkpoint's network on inputs scaled here.
    close = frame["Close"].to_numpy(np.float64)
    every: list[np.ndarray] = []
    for k in range(3):
        origin = 65 + 10 * k
        actual, naive = close[origin + 5 : origin + 15], close[origin + 4 : origin + 14]
        (best,) = (out / f"fold_{k:02d}" / "checkpoints").glob("best-*.ckpt")
        predicted = level_forecast(frame, best, range(origin, origin + 10), fit_rows=50 + 10 * k)
        assert np.allclose(table["predicted"][table["fold"] == k], predicted, rtol=1e-6, atol=1e-5), k
        assert folds["naive_rmse"][k] == pytest.approx(rmse(naive, actual), rel=0, abs=1e-6)  # 6 decimals
        assert folds["rmse"][k] == pytest.approx(rmse(predicted, actual), rel=1e-6)
        assert folds["rmse_ratio"][k] == pytest.approx(rmse(predicted, actual) / rmse(naive, actual), rel=1e-6)
        assert folds["direction_acc"][k] == np.mean(np.sign(predicted - naive) == np.sign(actual - naive))
        assert folds["up_share"][k] == np.mean(actual > naive)
        every.append(predicted)
    predicted, actual, naive = np.concatenate(every), close[70:], close[69:-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["days"] == 30
    assert summary["naive_rmse"] == pytest.approx(rmse(naive, actual), rel=1e-9)
    assert summary["rmse"] == pytest.approx(rmse(predicted, actual), rel=1e-6)
    assert summary["rmse_ratio_ci_low"] <= summary["rmse_ratio"] <= summary["rmse_ratio_ci_high"]
    for k in range(3):
        names = {p.name for p in (out / f"fold_{k:02d}" / "checkpoints").glob("*.ckpt")}
        assert "last.ckpt" in names and any(n.startswith("best-") for n in names)
    tags = scalars(out)
    assert {
        "backtest_rmse",
        "backtest_naive_rmse",
        "backtest_rmse_ratio",
        "backtest_direction_acc",
        "backtest_dm_pvalue",
    } <= tags.keys()
    assert len(tags["backtest_fold_rmse_ratio"]) == 3
    assert (out / "backtest_cumulative_se.png").stat().st_size > 1000
    assert re.search(r"backtest: Diebold-Mariano \(HLN\) .*p = ", capsys.readouterr().out)


@pytest.mark.parametrize(
    ("config", "extra"),
    [(c, []) for c in KOSPI_CONFIGS]
    + [
        (GRU, ["--data.target_transform", "diff"]),
        (GRU, ["--data.target_transform", "log_return"]),
        (GRU, ["--data.horizon", "3"]),
    ],
    ids=[c.stem for c in KOSPI_CONFIGS] + ["kospi_gru-diff", "kospi_gru-log_return", "kospi_gru-horizon3"],
)
def test_every_config_and_target_transform(config: Path, extra: list[str], tmp_path: Path) -> None:
    """With ``horizon`` H the backtest scores the first day ahead, and its test days end H - 1 rows early."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    run_cli(*backtest_args(csv, tmp_path / "runs", *extra, config=config, folds=2, test_size=5))
    table = pd.read_csv(run_dir(tmp_path / "runs") / "backtest.csv")
    assert len(table) == 10 and np.isfinite(table["predicted"]).all()
    frame = make_price_frame(80)
    days = list(frame["Date"])
    last = -1 - (int(extra[1]) - 1 if "--data.horizon" in extra else 0)
    assert table["date"].iloc[-1] == days[last]
    rows = np.array([days.index(day) for day in table["date"]])
    assert np.array_equal(rows, np.arange(len(days) + last - 9, len(days) + last + 1))  # 10 consecutive days
    close = frame["Close"].to_numpy(np.float64)
    assert np.allclose(table["actual"], close[rows], rtol=0, atol=1e-6)  # the first day ahead's close
    assert np.allclose(table["naive"], close[rows - 1], rtol=0, atol=1e-6)  # the day before's


def test_no_leak_from_the_test_period(tmp_path: Path) -> None:
    """Changing the CSV from fold 1's first test day on leaves folds 0 and 1's checkpoints and fold 1's first
    prediction exactly as they were; fold 2, which trains on those days, changes."""
    frame = make_price_frame(100)
    first_test_day = 100 - 20  # fold 1 of 3 x 10 tests the last 20 days
    runs = {}
    for name, prices in (("a", frame), ("b", frame_after(frame, first_test_day))):
        prices.to_csv(tmp_path / f"{name}.csv", index=False)
        run_cli(*backtest_args(tmp_path / f"{name}.csv", tmp_path / name, "--data.val_size", "5", epochs=2))
        runs[name] = run_dir(tmp_path / name)

    def best(run: Path, k: int) -> dict[str, torch.Tensor]:
        (path,) = (run / f"fold_{k:02d}" / "checkpoints").glob("best-*.ckpt")
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    for k in (0, 1):
        a, b = best(runs["a"], k), best(runs["b"], k)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), k
    tables = {name: pd.read_csv(run / "backtest.csv") for name, run in runs.items()}
    assert tables["a"]["predicted"][10] == tables["b"]["predicted"][10]  # fold 1's first test day
    assert tables["a"]["predicted"][:10].equals(tables["b"]["predicted"][:10])  # fold 0: all before
    a, b = best(runs["a"], 2), best(runs["b"], 2)
    assert not torch.equal(a["scaling.feature_span"], b["scaling.feature_span"])


def test_refit_warm_starts_from_the_previous_fold(tmp_path: Path) -> None:
    """With a learning rate too small to move the weights, warm folds keep fold 0's weights; scratch folds
    each start from their own seed."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)

    def weights(refit: str) -> list[torch.Tensor]:
        root = tmp_path / refit
        extra = ["--backtest.refit", refit, "--model.lr", "1e-12"]
        run_cli(*backtest_args(csv, root, *extra, folds=2, test_size=5))
        out = []
        for k in (0, 1):
            (path,) = (run_dir(root) / f"fold_{k:02d}" / "checkpoints").glob("best-*.ckpt")
            out.append(torch.load(path, map_location="cpu", weights_only=True)["state_dict"]["fc.weight"])
        return out

    warm, scratch = weights("warm"), weights("scratch")
    assert torch.allclose(warm[0], warm[1], atol=1e-8)
    assert not torch.allclose(scratch[0], scratch[1], atol=1e-3)
    assert torch.equal(warm[0], scratch[0])  # fold 0 is the same fit either way


@pytest.mark.slow
def test_two_shards_merged_equal_one_run(tmp_path: Path) -> None:
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    common = dict(folds=3, test_size=5)
    run_cli(*backtest_args(csv, tmp_path / "one", **common))
    for i in (1, 2):
        run_cli(*backtest_args(csv, tmp_path / f"shard{i}", "--backtest.shard", f"{i}/2", **common))
    shards = [str(run_dir(tmp_path / f"shard{i}")) for i in (1, 2)]
    assert not (Path(shards[0]) / "backtest.csv").exists()
    assert sorted(p.name for p in Path(shards[0]).glob("fold_*")) == ["fold_00", "fold_02"]
    run_cli(*backtest_args(csv, tmp_path / "merged", "--backtest.merge", json.dumps(shards), **common))
    one, merged = run_dir(tmp_path / "one"), run_dir(tmp_path / "merged")
    for name in ("backtest.csv", "folds.csv", "summary.json"):
        assert (one / name).read_bytes() == (merged / name).read_bytes(), name
    assert sorted(p.name for p in merged.glob("fold_*/checkpoints/last.ckpt")) == ["last.ckpt"] * 3


def test_workers_give_the_outputs_of_one_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Three folds in two forked workers: the same bytes as one process, and every fold's own checkpoints."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    common = dict(folds=3, test_size=5, epochs=3)
    run_cli(*backtest_args(csv, tmp_path / "one", **common))
    run_cli(*backtest_args(csv, tmp_path / "two", "--backtest.workers", "2", **common))
    assert re.search(r"3 of 3 folds of 5 test days, .* into .*, 2 at a time", capfd.readouterr().out)
    one, two = run_dir(tmp_path / "one"), run_dir(tmp_path / "two")
    for name in ("backtest.csv", "folds.csv", "summary.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for k in range(3):
        for run in (one, two):
            last = torch.load(
                run / f"fold_{k:02d}" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
            )
            assert last["epoch"] == 2 and last["global_step"] > 0  # the fold's last (third) epoch


def test_a_failed_worker_ends_the_run_in_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose fold fails on its input prints the CLI's one-line error; the run exits 2, naming it."""
    import rnn_lightning.backtest.run as backtest

    fit_fold = backtest._fit_fold

    def failing(run, fold, *args):  # noqa: ANN001, ANN002, ANN202
        if fold.index == 1:  # the second worker's only fold
            raise UserInputError("fold 1 cannot be read")
        return fit_fold(run, fold, *args)

    monkeypatch.setattr(backtest, "_fit_fold", failing)
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*backtest_args(csv, tmp_path / "runs", "--backtest.workers", "2", folds=3, test_size=5))
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "rnn-lightning: error: fold 1 cannot be read" in err
    assert re.search(r"rnn-lightning: error: backtest worker 2 of 2 failed \(exit status 2\)", err)
    assert "Traceback" not in err
    assert (run_dir(tmp_path / "runs") / "fold_00" / "predictions.csv").is_file()  # the finished fold stays


def test_resume_after_a_stop_gives_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped in its third fold, resumed: the bytes of one run; folds 0 and 1 are read back, not refit."""
    import rnn_lightning.backtest.run as backtest

    fit_fold = backtest._fit_fold
    fitted: list[int] = []
    stop: set[int] = set()

    def fit_or_stop(run, fold, *args):  # noqa: ANN001, ANN002, ANN202
        if fold.index in stop:
            raise RuntimeError(f"killed in fold {fold.index}")
        fitted.append(fold.index)
        return fit_fold(run, fold, *args)

    monkeypatch.setattr(backtest, "_fit_fold", fit_or_stop)
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    common = dict(folds=3, test_size=5)
    run_cli(*backtest_args(csv, tmp_path / "one", **common))
    stop.add(2)
    with pytest.raises(RuntimeError, match="killed in fold 2"):  # in this process: the default would fork
        run_cli(*backtest_args(csv, tmp_path / "two", "--backtest.workers", 1, **common))
    stopped = run_dir(tmp_path / "two")
    assert sorted(p.name for p in stopped.glob("fold_*")) == ["fold_00", "fold_01"]
    stop.clear()
    fitted.clear()
    capsys.readouterr()
    run_cli(*backtest_args(csv, tmp_path / "two", "--backtest.workers", 1, "--backtest.resume", stopped, **common))
    assert fitted == [2] and run_dir(tmp_path / "two") == stopped
    assert f"backtest: resuming {stopped}: 2 of 3 folds read back, 1 left to train (fold 2)" in capsys.readouterr().out
    one = run_dir(tmp_path / "one")
    for name in ("backtest.csv", "folds.csv", "summary.json"):
        assert (one / name).read_bytes() == (stopped / name).read_bytes(), name
    with pytest.raises(SystemExit) as exit_info:  # other settings: refused, in one line
        run_cli(*backtest_args(csv, tmp_path / "two", "--backtest.resume", stopped, folds=3, test_size=4))
    assert exit_info.value.code == 2
    assert re.search(
        r"error: backtest.resume: .* was made by another config, data or backtest settings", capsys.readouterr().err
    )


def test_workers_only_on_the_cpu() -> None:
    from types import SimpleNamespace

    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    from rnn_lightning.backtest import check_workers

    cpu = SimpleNamespace(accelerator=CPUAccelerator(), world_size=1)
    check_workers(cpu, threads=1)
    with pytest.raises(UserInputError, match=r"not on CUDAAccelerator x 1; pass --trainer.accelerator cpu"):
        check_workers(SimpleNamespace(accelerator=CUDAAccelerator(), world_size=1), threads=1)
    with pytest.raises(UserInputError, match=r"not on CPUAccelerator x 2"):
        check_workers(SimpleNamespace(accelerator=CPUAccelerator(), world_size=2), threads=1)
    with pytest.raises(UserInputError, match=r"needs --num_threads 1 .* got 2 threads"):
        check_workers(cpu, threads=2)


def test_workers_need_one_thread(kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()  # the CLI sets the process's thread count: restored for the next tests
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(*backtest_args(kospi_csv, tmp_path / "runs", "--backtest.workers", "2", "--num_threads", "2"))
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 2
    assert "backtest.workers > 1 needs --num_threads 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --- bad settings: one line, exit 2, no run folder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backtest.folds", "20"], r"20 x 10 = 200 test windows leave 0 training windows .* gives 75 windows"),
        (["--backtest.test_size", "0"], r"backtest.test_size must be a positive integer, got 0"),
        (["--backtest.shard", "3/2"], r"backtest.shard 3/2: i must lie in 1..2"),
        (["--backtest.merge", "[nowhere]"], r"backtest.merge: nowhere is not a folder"),
    ],
    ids=["too-many-folds", "test-size-0", "shard-3/2", "merge-missing"],
)
def test_bad_settings(
    extra: list[str], message: str, kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*backtest_args(kospi_csv, tmp_path / "runs", *extra))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rnn-lightning: error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "runs").exists()


# --- a long real series ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not N225.is_file(), reason="needs ../shared/data/indices/n225_daily.csv")
def test_nikkei_file(tmp_path: Path) -> None:
    """The Nikkei 225 export (115 null rows, no final newline): 2 folds of 250 days, one epoch each."""
    run_cli(*backtest_args(N225, tmp_path / "runs", config=CONFIGS / "kospi_gru_returns.yaml", folds=2, test_size=250))
    table = pd.read_csv(run_dir(tmp_path / "runs") / "backtest.csv")
    assert len(table) == 500 and table["date"].iloc[-1] == "2022-08-10"
    summary = json.loads((run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert 0.9 < summary["rmse_ratio"] < 1.1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(shard="half"), r"backtest.shard must look like i/n"),
        (dict(shard="0/2"), r"i must lie in 1..2"),
        (dict(shard="1/9"), r"9 shards for 5 folds"),
        (dict(window="sliding"), r"sliding needs backtest.train_size"),
        (dict(train_size=30), r"train_size applies only to backtest.window sliding"),
        (dict(refit="warm", shard="1/2"), r"backtest.shard needs backtest.refit scratch"),
        (dict(warm_epochs=3), r"warm_epochs applies only to backtest.refit warm"),
        (dict(folds=0), r"backtest.folds must be a positive integer"),
        (dict(workers=0), r"backtest.workers must be a positive integer"),
        (dict(refit="warm", workers=2), r"backtest.workers > 1 needs backtest.refit scratch"),
        (dict(confidence=1.5), r"confidence must lie in \(0, 1\)"),
        (dict(resume="runs", merge=["a"]), r"backtest.resume and backtest.merge exclude each other"),
        (dict(resume="runs", refit="warm"), r"backtest.resume needs backtest.refit scratch"),
    ],
)
def test_bad_settings_without_data(settings: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        check_settings(BacktestSettings(**settings))
