"""The regression heads (point, quantile, gaussian) and horizons: metrics checked against values computed
independently (numpy by hand, scipy integration), non-crossing quantiles, transforms with a horizon, bad
input, and the real CLI for every head at horizons 1 and 3."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, kospi_args, run_cli, scalars, write_price_csv
from scipy import integrate, stats

import rnn_lightning
from rnn_lightning.data.batches import Images, PriceWindows
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.heads import (
    HEADS,
    EnsembleHead,
    GaussianHead,
    Head,
    IntervalCoverage,
    IntervalWidth,
    MemberSpread,
    PinballLoss,
    QuantileHead,
    check_quantiles,
    gaussian_crps,
    lognormal_crps,
    price_crps,
)
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.models.scaling import TARGET_TRANSFORMS, PriceScaling

QUANTILE_CONFIG = CONFIGS / "kospi_gru_quantile.yaml"


# --- metrics against numpy and scipy --------------------------------------------------------------------


def test_pinball_coverage_width_by_hand() -> None:
    levels = [0.1, 0.5, 0.9]
    quantiles = np.array([[9.0, 10.0, 11.0], [0.0, 2.0, 3.0]])  # (B=2, Q=3)
    actual = np.array([12.0, 1.0])
    # Day 1: y above every quantile: tau * (y - q) = 0.1*3, 0.5*2, 0.9*1. Day 2: y=1 between q0.1 and q0.5:
    # 0.1*1, then (tau-1)*(y-q) = 0.5*1, 0.1*2.
    expected_pinball = np.mean([0.3, 1.0, 0.9, 0.1, 0.5, 0.2])
    pinball = PinballLoss(levels)
    # Two updates: the epoch mean weighs every element the same.
    pinball.update(torch.tensor(quantiles[:1]), torch.tensor(actual[:1]))
    pinball.update(torch.tensor(quantiles[1:]), torch.tensor(actual[1:]))
    assert float(pinball.compute()) == pytest.approx(expected_pinball, rel=1e-12)

    coverage, width = IntervalCoverage(), IntervalWidth()
    lower, upper = torch.tensor(quantiles[:, 0]), torch.tensor(quantiles[:, -1])
    coverage.update(lower, upper, torch.tensor(actual))
    coverage.update(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([2.0]))  # an end counts as inside
    width.update(lower, upper)
    assert float(coverage.compute()) == pytest.approx(2 / 3)
    assert float(width.compute()) == pytest.approx(np.mean([2.0, 3.0]))


def _crps_by_integration(cdf, y: float, lo: float, hi: float) -> float:
    """CRPS = int (F(x) - 1{x >= y})^2 dx, split at y."""
    below = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200)[0]
    above = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, hi, limit=200)[0]
    return below + above


@pytest.mark.parametrize(("mean", "scale", "y"), [(0.0, 1.0, 0.3), (5.0, 2.0, -1.0), (100.0, 0.5, 100.9)])
def test_gaussian_crps_matches_integration(mean: float, scale: float, y: float) -> None:
    expected = _crps_by_integration(stats.norm(mean, scale).cdf, y, mean - 12 * scale, mean + 12 * scale)
    got = gaussian_crps(
        torch.tensor(mean, dtype=torch.float64),
        torch.tensor(scale, dtype=torch.float64),
        torch.tensor(y, dtype=torch.float64),
    )
    assert float(got) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(("log_mean", "log_scale", "y"), [(np.log(2000), 0.01, 2030.0), (0.0, 0.5, 0.4)])
def test_lognormal_crps_matches_integration(log_mean: float, log_scale: float, y: float) -> None:
    dist = stats.lognorm(s=log_scale, scale=np.exp(log_mean))
    expected = _crps_by_integration(dist.cdf, y, 0.0, float(dist.ppf(1 - 1e-12)))
    got = lognormal_crps(
        torch.tensor(log_mean, dtype=torch.float64),
        torch.tensor(log_scale, dtype=torch.float64),
        torch.tensor(y, dtype=torch.float64),
    )
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("transform", ["level", "diff", "log_return"])
def test_price_crps_is_the_crps_of_the_price_distribution(transform: str) -> None:
    """A Gaussian on the unscaled target is a Gaussian (level, diff) or log-normal (log_return) price."""
    ref, y = 2000.0, 2025.0
    mean, scale = {"level": (2010.0, 15.0), "diff": (10.0, 15.0), "log_return": (0.005, 0.008)}[transform]
    if transform == "log_return":
        dist = stats.lognorm(s=scale, scale=ref * np.exp(mean))
    else:
        dist = stats.norm(mean + (ref if transform == "diff" else 0.0), scale)
    expected = _crps_by_integration(dist.cdf, y, float(dist.ppf(1e-12)), float(dist.ppf(1 - 1e-12)))
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    assert float(price_crps(transform, t(mean), t(scale), t(ref), t(y))) == pytest.approx(expected, rel=1e-6)


# --- what ensembles, exports and reports ask a head: methods, never attribute probes -------------------

HEAD_METHODS = (
    "create",
    "export_outputs",
    "interval_levels",
    "interval_from_members",
    "needs_naive",
    "naive_is_fitted",
    "fit_naive",
    "member_score",
    "member_errors",
    "member_spread",
    "member_interval",
)


PROBES = ("getattr", "hasattr")
# What callers used to probe heads for, before each became a method (or went away).
PROBED = {"export_outputs", "levels", "spread", "member_score", "member_interval", "needs_naive", "naive_fitted"}


def test_no_module_probes_a_head_with_getattr() -> None:
    """No ``getattr(``/``hasattr(`` on a head in the package: what callers ask of a head is a method.

    A probe is one whose object or name mentions a head, one for a name heads answered by attribute, or
    any inside the heads package (an ensemble's inner head).
    """
    package = Path(rnn_lightning.__file__).parent
    probes = []
    for path in sorted(package.rglob("*.py")):
        in_heads = path.is_relative_to(package / "models" / "heads")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES):
                continue
            args = [ast.unparse(a) for a in node.args[:2]]
            names = {a.value for a in node.args[1:2] if isinstance(a, ast.Constant)}
            if in_heads or "head" in " ".join(args).lower() or names & PROBED:
                probes.append(f"{path.relative_to(package.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not probes, "\n".join(probes)


def _answers(head: Head) -> dict[str, object]:
    return {
        "export": head.export_outputs(),
        "levels": head.interval_levels(),
        "from_members": head.interval_from_members(),
        "naive": head.needs_naive(),
        "score": head.member_score(),
    }


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_family_answers_the_head_methods(name: str, members: int) -> None:
    """Each family (solo and as an ensemble) answers what ensembles, exports and reports ask, by methods."""
    defined = vars(Head)  # every method has its default on the base class
    assert all(callable(defined.get(m)) or isinstance(defined.get(m), classmethod) for m in HEAD_METHODS)
    levels = [0.2, 0.5, 0.8]
    H = 10 if name == "classification" else 2
    solo = HEADS[name][1].create(H, levels)
    head = EnsembleHead(solo, members, levels) if members > 1 else solo
    distribution = name in ("quantile", "gaussian")
    spread = name == "point" and members > 1  # a point ensemble's interval is its members' spread
    assert _answers(head) == {
        "export": ("prediction", "quantiles") if distribution or spread else None,
        "levels": levels if distribution or spread else None,
        "from_members": spread,
        "naive": distribution or spread,
        "score": "acc" if name == "classification" else "rmse",
    }
    assert head.naive_is_fitted() is False
    if head.needs_naive():
        head.fit_naive(torch.randn(20, H, dtype=torch.float64))
        assert head.naive_is_fitted() is True
    assert isinstance(solo.member_spread(levels), MemberSpread) == (name == "point")

    g = torch.Generator().manual_seed(0)
    out = torch.randn(4, 5, solo.output_size(H), generator=g, dtype=torch.float64)  # (M, B, K)
    if name == "classification":
        batch = Images(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.randint(0, 10, (5,), generator=g))
        correct, count = solo.member_errors(out, batch, None)
        torch.testing.assert_close(correct, (out.argmax(-1) == batch.y).sum(1))
        assert count == 5
        return
    scaling = _scaling("diff", 10.0)
    ref = torch.full((5,), 2000.0, dtype=torch.float64)
    batch = PriceWindows(torch.zeros(5, 3, 1, dtype=torch.float64), ref, ref[:, None] + torch.randn(5, H, generator=g))
    squares, count = solo.member_errors(out, batch, scaling)
    assert squares.shape == (4,) and count == 5 * H
    if name == "point":
        quantiles = solo.member_interval(out, batch, scaling, levels)  # (B, H, Q)
        assert quantiles.shape == (5, H, 3) and bool((quantiles.diff(dim=-1) >= 0).all())


# --- heads: shapes, non-crossing, the naive distribution --------------------------------------------------


def _scaling(transform: str = "log_return", scale: float = 0.01) -> PriceScaling:
    scaling = PriceScaling(["LogReturn"], target_transform=transform)
    scaling.set_fitted(torch.zeros(1), torch.ones(1), 0.0, scale)
    return scaling


@pytest.mark.parametrize("levels", [[0.1, 0.5, 0.9], [0.05, 0.25, 0.75, 0.95], [0.2, 0.3]])
def test_quantiles_never_cross(levels: list[float]) -> None:
    head = QuantileHead(horizon=3, quantiles=levels)
    out = torch.randn(64, head.output_size(3), generator=torch.Generator().manual_seed(0)) * 30  # wild outputs
    quantiles = head.scaled_quantiles(out)  # (B, H, Q)
    assert quantiles.shape == (64, 3, len(levels))
    assert bool((quantiles.diff(dim=-1) > 0).all())
    prices = _scaling().to_price(quantiles, torch.full((64,), 2000.0))
    assert bool((prices.diff(dim=-1) > 0).all())


def test_zero_output_is_standard_normal_quantiles_and_median_is_point() -> None:
    head = QuantileHead(horizon=2, quantiles=[0.1, 0.5, 0.9])
    quantiles = head.scaled_quantiles(torch.zeros(1, 6))[0]  # (H, Q)
    z = stats.norm.ppf([0.1, 0.5, 0.9])
    np.testing.assert_allclose(quantiles.numpy(), np.tile(z, (2, 1)), atol=2e-4)
    # No 0.5 level: the median is interpolated linearly between the neighbouring quantiles.
    head = QuantileHead(horizon=1, quantiles=[0.2, 0.4, 0.9])
    out = torch.randn(5, 3)
    q = head.scaled_quantiles(out)[:, 0]  # (B, Q)
    expected = q[:, 1] + (0.5 - 0.4) / (0.9 - 0.4) * (q[:, 2] - q[:, 1])
    torch.testing.assert_close(head.scaled_point(out)[:, 0], expected)


def test_naive_distribution_is_training_quantiles_and_moments() -> None:
    moves = torch.tensor(np.random.default_rng(0).normal(0, 0.01, (50, 2)))  # (N, H)
    head = GaussianHead(horizon=2, quantiles=[0.1, 0.5, 0.9])
    head.fit_naive(moves)
    np.testing.assert_allclose(head.naive_quantiles.numpy(), np.quantile(moves.numpy(), [0.1, 0.5, 0.9], axis=0).T)
    np.testing.assert_allclose(head.naive_mean.numpy(), moves.numpy().mean(axis=0))
    np.testing.assert_allclose(head.naive_std.numpy(), moves.numpy().std(axis=0, ddof=1))
    prices = head.naive_price_quantiles(torch.tensor([100.0, 200.0], dtype=torch.float64), _scaling())  # (B, H, Q)
    np.testing.assert_allclose(prices[1].numpy(), 200 * np.exp(head.naive_quantiles.numpy()))
    assert "naive_quantiles" in head.state_dict()  # a checkpoint carries it


@pytest.mark.parametrize("transform", sorted(TARGET_TRANSFORMS))
@pytest.mark.parametrize("horizon", [1, 3])
def test_every_transform_with_a_horizon_round_trips(transform: str, horizon: int, tmp_path: Path) -> None:
    csv = write_price_csv(tmp_path / "p.csv", rows=40)
    dm = DailyPricesDataModule(str(csv), features=["Close"], horizon=horizon, split=20, target_transform=transform)
    dm.setup()
    windows = dm.windows()
    assert len(windows.ref) == 40 - 5 - (horizon - 1)
    assert windows.close.shape == ((35,) if horizon == 1 else (35 - horizon + 1, horizon))
    if horizon > 1:  # day h of window i is the close h rows after its last row
        np.testing.assert_array_equal(windows.close[:, 2].numpy(), dm.close[5 + 2 : 5 + 2 + len(windows.ref)].numpy())
    scaling = PriceScaling(["Close"], target_transform=transform)
    scaling.set_fitted(**dm.fitted_scaling())
    y = scaling.targets(windows.close, windows.ref)
    back = scaling.target_to_price(y, windows.ref)
    torch.testing.assert_close(back, windows.close, rtol=1e-13, atol=1e-9)
    scaled = (y - scaling.target_offset) / scaling.target_scale
    torch.testing.assert_close(scaling.to_price(scaled, windows.ref), windows.close, rtol=1e-13, atol=1e-9)


def test_horizon_one_is_the_one_day_task(tmp_path: Path) -> None:
    """horizon 1: the windows, splits and prediction rows the one-day task always had."""
    csv = write_price_csv(tmp_path / "p.csv", rows=40)
    dm = DailyPricesDataModule(str(csv), horizon=1, split=20, val_size=5)
    dm.setup()
    w, close, T = dm.windows(), dm.close, 5
    assert dm.num_outputs == 1 and dm.num_windows == 40 - T
    torch.testing.assert_close(w.ref, close[T - 1 : -1], rtol=0, atol=0)
    torch.testing.assert_close(w.close, close[T:], rtol=0, atol=0)
    assert [dm.split_slice(s) for s in ("train", "val", "test")] == [slice(0, 15), slice(15, 20), slice(20, 35)]
    assert dm.fit_rows == 15 + T
    rows = dm.prediction_rows()
    assert list(rows.columns) == ["date", "split", "naive_close"] and len(rows) == 36
    assert dm.forecast_window().close.shape == (1,)


def test_training_windows_stop_before_later_targets(tmp_path: Path) -> None:
    """For H > 1 no training target is a close that a validation or test window predicts."""
    csv = write_price_csv(tmp_path / "p.csv", rows=60)
    dm = DailyPricesDataModule(str(csv), horizon=4, split=30, val_size=5)
    dm.setup()
    train, val = dm.split_slice("train"), dm.split_slice("val")
    last_train_target_row = train.stop - 1 + 5 + 4 - 1
    first_val_target_row = val.start + 5
    assert last_train_target_row < first_val_target_row
    assert dm.training_moves().shape == (train.stop, 4)
    assert dm.fit_rows == last_train_target_row + 1  # the scaling sees exactly the training rows


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ([0.0, 0.5], "lie in \\(0, 1\\)"),
        ([0.5, 1.2], "lie in \\(0, 1\\)"),
        ([0.1, 0.1, 0.9], "repeat"),
        ([0.9, 0.1], "sorted"),
        ([0.5], "at least two"),
    ],
)
def test_bad_quantiles(levels: list[float], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        check_quantiles(levels)


def test_bad_horizons_and_heads(tmp_path: Path) -> None:
    csv = write_price_csv(tmp_path / "p.csv", rows=40)
    with pytest.raises(UserInputError, match="horizon must be a positive integer"):
        DailyPricesDataModule(str(csv), horizon=0)
    with pytest.raises(UserInputError, match="horizon=5 is too long for the test period"):
        DailyPricesDataModule(str(csv), horizon=5, split=32).setup()
    with pytest.raises(UserInputError, match="head 'quantile' is for regression"):
        RecurrentModel(head="quantile", task="classification", input_size=28, sequence_length=28, num_outputs=10)


# --- the real CLI ---------------------------------------------------------------------------------------


def _common(csv: Path, root: Path, head: str, horizon: int) -> list[object]:
    return kospi_args(QUANTILE_CONFIG, csv, root, "--model.head", head, "--data.horizon", str(horizon))


def _pinball(q: np.ndarray, y: np.ndarray, levels: list[float]) -> float:
    error = y[:, None] - q
    return float(np.mean(np.maximum(np.array(levels) * error, (np.array(levels) - 1) * error)))


@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("head", ["point", "quantile", "gaussian"])
def test_cli_fit_test_predict(head: str, horizon: int, tmp_path: Path) -> None:
    csv, root = write_price_csv(tmp_path / "prices.csv"), tmp_path / "runs"
    common = _common(csv, root, head, horizon)
    run_cli("fit", *common, "--trainer.max_epochs", "2")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    run_cli("test", *common, "--ckpt_path", ckpt)
    run_cli("predict", *common, "--ckpt_path", ckpt)
    logged = {k: v[0] for k, v in scalars(root / "lightning_logs" / "version_1").items()}
    table = pd.read_csv(root / "lightning_logs" / "version_2" / "predictions.csv")

    names = {"test_loss", "test_rmse", "test_mae", "test_mape", "test_naive_rmse", "test_direction_acc"}
    if head != "point":
        names |= {f"test_{who}{m}" for who in ("", "naive_") for m in ("pinball", "coverage", "width")}
    if head == "gaussian":
        names |= {"test_crps", "test_naive_crps"}
    days = {
        f"{n}_h{d}"
        for n in names
        if n.startswith(("test_rmse", "test_naive", "test_pinball", "test_coverage", "test_width", "test_crps"))
        for d in range(1, 4)
    }
    expected = names | (days if horizon > 1 else set())
    assert {k for k in logged if k.startswith("test_")} == expected

    # The forecast rows cover the next H business days; the CSV's metrics are the logged ones.
    forecast = table[table["split"] == "forecast"]
    last = pd.Timestamp(pd.read_csv(csv)["Date"].iloc[-1])
    assert list(pd.to_datetime(forecast["date"])) == [last + pd.offsets.BDay(d) for d in range(1, horizon + 1)]
    assert forecast["actual_close"].isna().all()
    test = table[table["split"] == "test"]
    assert len(test) == (75 - 50 - (horizon - 1)) * horizon
    y, prediction = test["actual_close"].to_numpy(), test["predicted_close"].to_numpy()
    assert logged["test_rmse"] == pytest.approx(np.sqrt(np.mean((prediction - y) ** 2)), rel=1e-4)
    assert logged["test_naive_rmse"] == pytest.approx(np.sqrt(np.mean((test["naive_close"] - y) ** 2)), rel=1e-5)
    if horizon > 1:
        day2 = test[test["h"] == 2]
        assert logged["test_rmse_h2"] == pytest.approx(
            np.sqrt(np.mean((day2["predicted_close"] - day2["actual_close"]) ** 2)), rel=1e-4
        )
    if head == "point":
        assert [c for c in table.columns if c.startswith("q")] == []
        return
    levels = [0.1, 0.5, 0.9]
    q = test[[f"q{level:g}_close" for level in levels]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()
    assert logged["test_pinball"] == pytest.approx(_pinball(q, y, levels), rel=1e-4)
    assert logged["test_coverage"] == pytest.approx(np.mean((y >= q[:, 0]) & (y <= q[:, -1])))
    assert logged["test_width"] == pytest.approx(np.mean(q[:, -1] - q[:, 0]), rel=1e-4)
    # The naive distribution: today's close moved by the training windows' quantiles of log returns.
    dm = DailyPricesDataModule(
        str(csv), features=["LogReturn"], horizon=horizon, split=50, val_size=10, target_transform="log_return"
    )
    dm.setup()
    close = dm.close.numpy()
    train_windows = range(dm.split_slice("train").stop)
    moves = np.array([[np.log(close[i + 5 + d] / close[i + 4]) for d in range(horizon)] for i in train_windows])
    naive_q = test["naive_close"].to_numpy()[:, None] * np.exp(
        np.quantile(moves, levels, axis=0).T[test["h"].to_numpy() - 1 if horizon > 1 else np.zeros(len(test), int)]
    )
    assert logged["test_naive_pinball"] == pytest.approx(_pinball(naive_q, y, levels), rel=1e-6)
    assert logged["test_naive_coverage"] == pytest.approx(np.mean((y >= naive_q[:, 0]) & (y <= naive_q[:, -1])))
    if head == "gaussian":
        mean, scale = test["target_mean"].to_numpy(), test["target_scale"].to_numpy()
        crps = lognormal_crps(
            torch.tensor(np.log(test["naive_close"].to_numpy()) + mean), torch.tensor(scale), torch.tensor(y)
        )
        assert logged["test_crps"] == pytest.approx(float(crps.mean()), rel=1e-3)  # the CSV rounds to 6 decimals
        # The naive Gaussian: the training moves' mean and standard deviation per day ahead, log-normal prices.
        day = test["h"].to_numpy() - 1 if horizon > 1 else np.zeros(len(test), int)
        naive_crps = lognormal_crps(
            torch.tensor(np.log(test["naive_close"].to_numpy()) + moves.mean(axis=0)[day]),
            torch.tensor(moves.std(axis=0, ddof=1)[day]),
            torch.tensor(y),
        )
        assert logged["test_naive_crps"] == pytest.approx(float(naive_crps.mean()), rel=1e-6)


def test_checkpoint_of_another_head_or_horizon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, root = write_price_csv(tmp_path / "prices.csv"), tmp_path / "runs"
    run_cli("fit", *_common(csv, root, "quantile", 1), "--trainer.max_epochs", "1")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    for head, horizon, message in (
        ("gaussian", 1, "head: checkpoint 'quantile' vs config 'gaussian'"),
        ("quantile", 3, "horizon: checkpoint 1 vs config 3"),
    ):
        with pytest.raises(SystemExit):
            run_cli("test", *_common(csv, root, head, horizon), "--ckpt_path", ckpt)
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_quantile_head_is_calibrated_on_a_gaussian_random_walk(tmp_path: Path) -> None:
    """Daily log returns N(0, 0.01^2): a trained quantile head's 80% interval covers 75-85% of ~1,000 test
    days and its pinball loss is within 0.5% of the oracle's (the walk's true quantiles, ref * exp(0.01 z)).

    The head starts from random weights (not the naive zero output), so it has to learn the quantiles; after
    one training step its pinball loss was 1.2% above the oracle's, after 12 epochs 0.01% below.
    """
    rows, sigma, split, T = 2000, 0.01, 1000, 5
    csv, root = write_price_csv(tmp_path / "walk.csv", rows=rows, seed=3), tmp_path / "runs"
    common = [
        "--config",
        QUANTILE_CONFIG,
        "--data.csv_path",
        csv,
        "--trainer.default_root_dir",
        root,
        "--data.split",
        str(split),
        "--data.val_size",
        "100",
        "--data.batch_size",
        "100",
        "--model.zero_init_head",
        "false",
        "--model.hidden_size",
        "4",
        "--model.num_layers",
        "1",
        "--model.readout",
        "last",
        "--model.lr",
        "0.01",
        "--plots.enabled",
        "false",
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "12", "--checkpoint.include_initial", "false")
    run_cli("test", *common, "--ckpt_path", root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    logged = {k: v[0] for k, v in scalars(root / "lightning_logs" / "version_1").items()}

    close = pd.read_csv(csv)["Close"].to_numpy()
    ref, y = close[split + T - 1 : -1], close[split + T :]  # the test windows' last and next closes
    levels = [0.1, 0.5, 0.9]
    oracle = ref[:, None] * np.exp(sigma * stats.norm.ppf(levels))  # (N, Q)
    oracle_pinball = _pinball(oracle, y, levels)
    assert 0.75 <= logged["test_coverage"] <= 0.85, logged
    assert logged["test_pinball"] <= 1.005 * oracle_pinball, (logged["test_pinball"], oracle_pinball)
    assert logged["test_pinball"] >= 0.99 * oracle_pinball  # no model beats the truth by much on 995 days
