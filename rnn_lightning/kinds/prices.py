"""Daily prices: windows of a daily CSV's features, forecasting the next days' close against the naive forecast."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnn_lightning.data.batches import PriceWindows
from rnn_lightning.kinds.base import DataKind, Port, ServingModule, register
from rnn_lightning.reports import kospi


class PriceForecaster(ServingModule):
    """Raw price windows (and last closes) -> the head's prediction rows, through the model's own path.

    Args:
        model: A :class:`~rnn_lightning.models.module.RecurrentModel` trained on daily prices.
        outputs: The keys of the head's ``predict`` rows to return, in order.

    The graph takes each window's last close too when the model's scaling reads it
    (``needs_reference``: a relative target or window normalisation), otherwise the windows only.
    """

    @property
    def needs_last_close(self) -> bool:
        return bool(self.model.scaling.needs_reference)

    def forward(self, windows: Tensor, last_close: Tensor | None = None) -> tuple[Tensor, ...]:
        """``windows`` (B, T, F) float64 and ``last_close`` (B,) float64 -> e.g. predicted closes (B,)."""
        # Without a relative target or window_norm the last close is never read: zeros stand in for it.
        ref = last_close if last_close is not None else windows.new_zeros(windows.shape[0])  # (B,)
        batch = PriceWindows(windows, ref, ref)  # the close to predict is unknown and unused by predict
        rows = self.model.forecast(batch)
        return tuple(rows[key] for key in self.outputs)


class DailyPrices(DataKind):
    """A daily CSV's windows: a regression on the close, scored against tomorrow = today."""

    name = "daily_prices"
    task = "regression"
    tune_objective = "backtest"
    walks_forward = True
    baseline = "naive"
    report = kospi
    default_outputs = ("prediction",)
    output_descriptions = {"prediction": "predicted value(s) in the data's units"}

    def serving_module(self, model: Any, outputs: tuple[str, ...]) -> ServingModule:
        return PriceForecaster(model, outputs)

    def check_batch(self, datamodule: Any) -> PriceWindows:
        """Every window, then tomorrow's: what ``predict`` forecasts (a few hundred samples)."""
        every, tomorrow = datamodule.windows(), datamodule.forecast_window()
        return PriceWindows(*(torch.cat([a, b]) for a, b in zip(every, tomorrow, strict=True)))

    def export_inputs(self, model: Any, batch: Any) -> tuple[Tensor, ...]:
        """The raw windows in the scaling's ``raw_dtype``, then each last close (float64) when it is read."""
        x = batch.x.to(model.scaling.raw_dtype)
        if model.scaling.needs_reference:
            return (x, batch.ref.to(torch.float64))
        return (x,)

    def input_ports(self, model: Any, wrapper: ServingModule) -> list[Port]:
        steps, features = model.hparams.sequence_length, model.hparams.input_size
        names = list(model.scaling.features)
        ports = [
            Port(
                "windows",
                "float64",
                ("batch", steps, features),
                f"raw feature windows in the CSV's units, oldest day first; features {names}",
            )
        ]
        if model.scaling.needs_reference:
            ports.append(Port("last_close", "float64", ("batch",), "each window's last known close"))
        return ports


DAILY_PRICES = register(DailyPrices())
