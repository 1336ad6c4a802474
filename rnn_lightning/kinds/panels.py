"""Panels: many series forecast by one network, scored by MASE against the seasonal naive forecast."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnn_lightning.data.panel.batches import PanelWindows
from rnn_lightning.kinds.base import DataKind, Port, ServingModule, register
from rnn_lightning.reports import panels


class PanelForecaster(ServingModule):
    """Series ids and raw windows (plus calendar inputs) -> the head's prediction rows, in each series' units.

    The per-series scaling, the series embedding and the static covariates are the model's buffers and
    weights, looked up inside the graph by the series id.
    """

    def forward(
        self,
        series: Tensor,
        window: Tensor,
        mask: Tensor,
        calendar_x: Tensor | None = None,
        calendar_y: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """``series`` (B,) int64, ``window`` (B, L, F) float32, ``mask`` (B, L) bool, calendars (B, L|H, C) int64."""
        B, L = window.shape[:2]
        H = int(self.model.hparams.num_outputs)
        zeros = window.new_zeros(B, H)  # targets, seasonal naive: unknown and unused by a forecast
        no_calendar = series.new_zeros(B, L, 0)
        batch = PanelWindows(
            series=series,
            x=window,
            mask=mask,
            y=zeros,
            origin=series.new_zeros(B),
            step=series.new_zeros(B),
            static=window.new_zeros(B, 0),
            calendar_x=calendar_x if calendar_x is not None else no_calendar,
            calendar_y=calendar_y if calendar_y is not None else series.new_zeros(B, H, 0),
            ref=window[:, -1, 0],
            snaive=zeros,
            mase_scale=window.new_zeros(B),
        )
        rows = self.model.forecast(batch)
        return tuple(rows[key] for key in self.outputs)


class Panels(DataKind):
    """Many series, one global network: a regression per step ahead, in each series' own units."""

    name = "panel"
    task = "regression"
    tune_objective = "panel_backtest"  # scored by the rolling-origin backtest on per-date losses
    walks_forward = False  # not one series' time order: a panel's backtest cuts every series (backtest_plan)
    backtest_plan = "rolling_origins"  # the last k horizons of every series (rnn_lightning.backtest.panel_run)
    baseline = "snaive"
    report = panels
    default_outputs = ("prediction",)
    output_descriptions = {
        "prediction": "forecast of each of the horizon steps, in the series' own units",
        "quantiles": "forecast quantiles per step, in the series' own units",
    }

    def serving_module(self, model: Any, outputs: tuple[str, ...]) -> ServingModule:
        return PanelForecaster(model, outputs)

    def check_batch(self, datamodule: Any) -> PanelWindows:
        """Every test window (one per series and horizon block)."""
        batch: PanelWindows = datamodule.split_batch("test")
        return batch

    def export_inputs(self, model: Any, batch: Any) -> tuple[Tensor, ...]:
        """Series ids, raw windows (float32), the mask, then the calendar inputs when the panel has any."""
        inputs = [batch.series.to(torch.int64), batch.x.to(model.scaling.raw_dtype), batch.mask.to(torch.bool)]
        if model.scaling.calendar_periods:
            inputs += [batch.calendar_x.to(torch.int64), batch.calendar_y.to(torch.int64)]
        return tuple(inputs)

    def input_ports(self, model: Any, wrapper: ServingModule) -> list[Port]:
        L, F, H = model.hparams.sequence_length, model.hparams.input_size, model.hparams.num_outputs
        C = len(model.scaling.calendar_periods)
        ports = [
            Port("series", "int64", ("batch",), "each window's series: its row in the panel's sorted ids"),
            Port("window", "float32", ("batch", L, F), "raw inputs in the series' units (target, past covariates)"),
            Port("mask", "bool", ("batch", L), "True at real input steps, False at left padding"),
        ]
        if C:
            ports += [
                Port("calendar_x", "int64", ("batch", L, C), "the inputs' calendar features (from 0)"),
                Port("calendar_y", "int64", ("batch", H, C), "the forecast steps' calendar features"),
            ]
        return ports


PANELS = register(Panels())
