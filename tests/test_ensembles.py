"""Ensembles through the real CLI: fit, test, predict, resume, backtest, export, errors.

The ensemble's metrics are checked against each member's forecasts computed here: every member is
rebuilt as a solo model from the checkpoint's weights (``member_state``), so the mean forecast, the
members' RMSE mean and sd and the member interval come from independent solo forward passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, kospi_args, run_cli, scalars
from test_errors import expect_error

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.models import RecurrentModel

KOSPI = CONFIGS / "kospi_gru.yaml"
MEMBERS = 3


def common(csv: Path, root: Path, *extra: object) -> list[object]:
    return kospi_args(KOSPI, csv, root, *extra)


def solo_members(ckpt: Path) -> list[RecurrentModel]:
    """Each member of a checkpoint's ensemble as a solo model with that member's weights."""
    packed = RecurrentModel.load_from_checkpoint(ckpt, map_location="cpu").eval()
    settings = {k: v for k, v in packed.hparams.items() if k != "members"}
    solos = []
    for m in range(packed.hparams.members):
        solo = RecurrentModel(**settings, members=1).eval()
        state = {f"backbone.rnn.{k}": v for k, v in packed.backbone.rnn.member_state(m).items()}
        state.update({"fc.weight": packed.fc.weight[m], "fc.bias": packed.fc.bias[m]})
        state.update({k: v for k, v in packed.state_dict().items() if k.startswith("scaling.")})
        solo.load_state_dict(state)
        solos.append(solo)
    return solos


@pytest.fixture
def fitted(kospi_csv: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    run_cli("fit", *common(kospi_csv, root, "--trainer.max_epochs", "3", "--model.members", MEMBERS))
    return root, root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_fit_test_predict_score_the_ensemble_and_its_members(kospi_csv: Path, fitted: tuple[Path, Path]) -> None:
    root, last = fitted
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert state["fc.weight"].shape[0] == MEMBERS  # the checkpoint holds every member
    run_cli("test", *common(kospi_csv, root, "--ckpt_path", last, "--model.members", MEMBERS))
    logged = {k: v[0] for k, v in scalars(root / "lightning_logs" / "version_1").items()}

    # Every member's forecast of the 25 test windows, each from its own solo model.
    dm = DailyPricesDataModule(csv_path=str(kospi_csv), split=50, val_size=10)
    dm.setup("test")
    windows = dm.windows("test")
    solos = solo_members(last)
    with torch.no_grad():
        each = np.stack([solo.forecast(windows)["prediction"].numpy() for solo in solos])  # (M, 25)
    actual = windows.close.numpy()
    rmses = np.sqrt(((each - actual) ** 2).mean(axis=1))
    assert logged["test_member_rmse_mean"] == pytest.approx(rmses.mean(), rel=1e-5)
    assert logged["test_member_rmse_sd"] == pytest.approx(rmses.std(ddof=1), rel=1e-4)
    mean = each.mean(axis=0)
    assert logged["test_rmse"] == pytest.approx(np.sqrt(((mean - actual) ** 2).mean()), rel=1e-5)
    low, high = np.quantile(each, [0.1, 0.9], axis=0)
    assert logged["test_coverage"] == pytest.approx(((actual >= low) & (actual <= high)).mean(), abs=1e-9)
    assert logged["test_width"] == pytest.approx((high - low).mean(), rel=1e-5)
    assert {"test_naive_coverage", "test_naive_width", "test_naive_pinball", "test_pinball"} <= logged.keys()

    run_cli("predict", *common(kospi_csv, root, "--ckpt_path", last, "--model.members", MEMBERS))
    rows = pd.read_csv(root / "lightning_logs" / "version_2" / "predictions.csv")
    test = rows[rows["split"] == "test"]
    np.testing.assert_allclose(test["predicted_close"], mean, rtol=1e-6)
    np.testing.assert_allclose(test["q0.1_close"], low, rtol=1e-6)
    np.testing.assert_allclose(test["q0.9_close"], high, rtol=1e-6)


def test_resume_keeps_every_member(kospi_csv: Path, fitted: tuple[Path, Path]) -> None:
    root, last = fitted
    before = torch.load(last, map_location="cpu", weights_only=False)
    run_cli(
        "fit", *common(kospi_csv, root, "--trainer.max_epochs", "4", "--model.members", MEMBERS, "--ckpt_path", last)
    )
    resumed = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    after = torch.load(resumed, map_location="cpu", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1
    assert after["state_dict"]["fc.weight"].shape == before["state_dict"]["fc.weight"].shape
    assert not torch.equal(after["state_dict"]["fc.weight"], before["state_dict"]["fc.weight"])


def test_checkpoint_of_another_member_count_is_refused(
    kospi_csv: Path, fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, last = fitted
    expect_error(
        capsys,
        "test",
        *common(kospi_csv, root, "--ckpt_path", last, "--model.members", "2"),
        inputs=[kospi_csv, last],
        match=r"members: checkpoint 3 vs config 2",
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [("0", r"members must be a positive integer, got 0"), ("1.5", r"model\.members: expected int, got 1\.5")],
)
def test_bad_member_counts_are_one_line_errors(
    value: str, match: str, kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "runs"
    expect_error(capsys, "fit", *common(kospi_csv, root, "--model.members", value), inputs=[kospi_csv], match=match)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # as in test_export.py
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_the_whole_ensemble(kospi_csv: Path, fitted: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    root, last = fitted
    target = tmp_path / f"ensemble.{'onnx' if fmt == 'onnx' else 'pt'}"
    args = ["--ckpt_path", last, "--model.members", MEMBERS, "--export.path", target, "--export.format", fmt]
    run_cli("export", *common(kospi_csv, root, *args))
    dm = DailyPricesDataModule(csv_path=str(kospi_csv), split=50, val_size=10)
    dm.setup("test")
    windows = dm.windows("test")
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(target))
        prediction, quantiles = session.run(None, {"windows": windows.x.numpy()})
        metadata = json.loads(session.get_modelmeta().custom_metadata_map["rnn_lightning"])
    else:
        extra = {"rnn_lightning.json": ""}
        module = torch.jit.load(str(target), _extra_files=extra)
        with torch.no_grad():
            prediction, quantiles = (t.numpy() for t in module(windows.x))
        metadata = json.loads(extra["rnn_lightning.json"])
    with torch.no_grad():
        each = np.stack([solo.forecast(windows)["prediction"].numpy() for solo in solo_members(last)])
    np.testing.assert_allclose(prediction, each.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(quantiles, np.quantile(each, [0.1, 0.5, 0.9], axis=0).T, rtol=1e-5)
    assert metadata["model"]["members"] == MEMBERS


def test_backtest_trains_an_ensemble_per_fold(kospi_csv: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_cli(
        "backtest",
        *common(kospi_csv, root, "--trainer.max_epochs", "2", "--model.members", "2"),
        "--backtest.folds",
        "2",
        "--backtest.test_size",
        "5",
        "--backtest.workers",
        "1",
    )
    (run_dir,) = (root / "lightning_logs").glob("version_*")
    folds = sorted(run_dir.glob("fold_*/**/last.ckpt"))
    assert len(folds) == 2
    for ckpt in folds:
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["fc.weight"].shape[0] == 2


def test_image_ensemble_averages_probabilities(mnist_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = [
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.init_args.data_dir",
        mnist_dir,
        "--data.init_args.download",
        "false",
        "--trainer.default_root_dir",
        root,
        "--trainer.max_epochs",
        "2",
        "--model.members",
        "2",
        "--model.hidden_size",
        "4",
    ]
    run_cli("fit", *args)
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    run_cli("test", *args, "--ckpt_path", last)
    logged = {k: v[0] for k, v in scalars(root / "lightning_logs" / "version_1").items()}
    assert {"test_acc", "test_member_acc_mean", "test_member_acc_sd"} <= logged.keys()
    assert 0.0 <= logged["test_member_acc_mean"] <= 1.0


def test_tune_trains_an_ensemble_per_fold(kospi_csv: Path, tmp_path: Path) -> None:
    """Every trial's folds and the hold-out refit are ensembles, and the chosen config keeps the count."""
    root = tmp_path / "runs"
    space = tmp_path / "space.yaml"
    space.write_text("model.hidden_size: {low: 2, high: 6}\n")
    run_cli(
        "tune",
        *common(kospi_csv, root, "--trainer.max_epochs", "1", "--model.members", "2"),
        "--tune.space",
        space,
        "--tune.trials",
        "2",
        "--tune.holdout",
        "5",
        "--tune.reps",
        "100",
        "--backtest.folds",
        "2",
        "--backtest.test_size",
        "5",
    )
    (run_dir,) = (root / "lightning_logs").glob("version_*")
    checkpoints = sorted(run_dir.glob("trial_*/fold_*/checkpoints/last.ckpt")) + sorted(
        run_dir.glob("holdout/**/last.ckpt")
    )
    assert len(checkpoints) == 5  # 2 trials x 2 folds, and the hold-out refit
    for ckpt in checkpoints:
        assert torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["fc.weight"].shape[0] == 2
    assert yaml.safe_load((run_dir / "best_config.yaml").read_text())["model"]["members"] == 2


@pytest.mark.slow
def test_ddp_ensemble_test_equals_single_device_test(tmp_path: Path) -> None:
    """Two DDP processes train one ensemble, and their test metrics, the members' ones included (states
    summed across ranks), equal a single process's."""
    from helpers import write_price_csv
    from test_ddp import probe_args, read_probes, run_ddp

    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    data = [*common(csv, tmp_path / "unused")[:4], "--data.split", "55", "--data.val_size", "9", "--model.members", "2"]
    root = tmp_path / "runs"
    run_ddp("fit", *data, "--trainer.max_epochs", "2", "--trainer.default_root_dir", root, cwd=tmp_path)
    (last,) = root.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    run_ddp(
        "test",
        *data,
        "--ckpt_path",
        last,
        "--trainer.default_root_dir",
        tmp_path / "t2",
        *probe_args(tmp_path / "p2"),
        cwd=tmp_path,
    )
    run_cli(
        "test", *data, "--ckpt_path", last, "--trainer.default_root_dir", tmp_path / "t1", *probe_args(tmp_path / "p1")
    )
    ddp = read_probes(tmp_path / "p2", "test")
    (single,) = read_probes(tmp_path / "p1", "test", world_size=1)
    assert {"test_rmse", "test_member_rmse_mean", "test_member_rmse_sd", "test_coverage"} <= single["test"].keys()
    assert ddp[0]["test"] == ddp[1]["test"]
    for name, value in single["test"].items():
        assert ddp[0]["test"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
