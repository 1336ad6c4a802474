"""``--data.forecast_base snaive``: the network forecasts the change from each window's seasonal naive forecast.

Tiny synthetic panels (tests/test_panels.py's); with ``zero_init_head`` an untrained model forecasts the
seasonal naive forecast exactly, for every regression head and for an ensemble; the default spec is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import only_version_dir
from test_panels import LENGTHS, H, M, best_checkpoint, cli_args, datamodule, model_for, panel_csv, run_cli

__all__ = ["panel_csv"]  # the fixture, shared with tests/test_panels.py


@pytest.mark.parametrize(("head", "members"), [("point", 1), ("quantile", 1), ("gaussian", 1), ("point", 2)])
def test_a_zero_output_is_the_seasonal_naive_forecast(panel_csv: Path, head: str, members: int) -> None:
    dm = datamodule(panel_csv, forecast_base="snaive", window_norm="standard", season_length=M)
    assert dm.scaling_spec["forecast_base"] == "snaive" and dm.scaling_spec["horizon"] == H
    model = model_for(dm, head=head, members=members, zero_init_head=True, series_embedding=2)
    model.take_fitted("fit", dm.fitted_scaling, dm.training_moves)
    for split in ("val", "test"):
        batch = dm.split_batch(split)  # the windows' snaive, gathered from the panel by position
        torch.testing.assert_close(model.forecast(batch)["prediction"], batch.snaive.double(), rtol=1e-6, atol=1e-6)
        view = model.batch_scaling(batch)
        back = view.to_price(view.scale_targets(batch.y, batch.ref), batch.ref)
        torch.testing.assert_close(back, batch.y.double(), rtol=1e-5, atol=1e-4)


def test_the_default_spec_and_identity_are_unchanged(panel_csv: Path) -> None:
    dm = datamodule(panel_csv)
    assert "forecast_base" not in dm.scaling_spec and "forecast_base" not in dm.state_dict()["identity"]
    assert model_for(dm).scaling.forecast_base == "level"  # type: ignore[attr-defined]


def test_fit_without_validation_then_test_and_export_through_the_cli(panel_csv: Path, tmp_path: Path) -> None:
    """The refit a test forecast uses: every training step, a fixed epoch count, last.ckpt; then test, export."""
    extra = ("--data.forecast_base", "snaive", "--data.validation", "false", "--model.head", "quantile")
    run_cli("fit", *cli_args(panel_csv, tmp_path / "fit", *extra))
    last = only_version_dir(tmp_path / "fit") / "checkpoints" / "last.ckpt"
    assert last.is_file() and best_checkpoint(tmp_path / "fit").is_file()
    run_cli("test", *cli_args(panel_csv, tmp_path / "test", *extra), "--ckpt_path", last)
    run_cli("predict", *cli_args(panel_csv, tmp_path / "predict", *extra), "--ckpt_path", last)
    table = pd.read_csv(only_version_dir(tmp_path / "predict") / "predictions.csv")
    assert len(table) == len(LENGTHS) * H and table["y_hat"].notna().all()
    path = tmp_path / "model.pt"
    export = ("--export.format", "torchscript", "--export.path", path)
    run_cli("export", *cli_args(panel_csv, tmp_path / "x", *extra), "--ckpt_path", last, *export)
    dm = datamodule(panel_csv, forecast_base="snaive", validation=False)
    batch = dm.split_batch("test")
    (got, *_) = torch.jit.load(str(path))(batch.series, batch.x, batch.mask, batch.calendar_x, batch.calendar_y)
    predicted = torch.tensor(table["y_hat"].to_numpy()).reshape(len(LENGTHS), H)
    torch.testing.assert_close(got.double(), predicted, rtol=1e-4, atol=1e-3)
