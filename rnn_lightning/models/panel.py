"""What a model needs of a panel (many series, one network): per-series scaling, series inputs, panel metrics.

Three parts, each used only when the data module's ``scaling_spec`` names the ``panel`` scaling (a daily
price or image model holds none of them, so its state dict and outputs do not change):

* :class:`PanelScaling`: each series' (loc, scale), fit by the data module on that series' training part
  and carried as buffers (``loc``, ``scale``: (n_series,)), so a checkpoint, ``predict`` and an exported
  file turn raw windows into forecasts in each series' own units. Optionally each input window is
  normalised again by its own statistics (``window_norm``). A batch is scaled through
  :meth:`PanelScaling.for_batch`, a :class:`SeriesScaling` view holding each sample's affine map, which
  the regression heads use exactly as they use a price scaling (``scale_targets``, ``to_price``...).
* :class:`PanelInputs`: what the network reads besides the scaled window: the padding mask, a learned
  series embedding, the static covariates (stored once per series, in the scaling's buffers), and the
  calendar features of the inputs (sin/cos per step); the calendar of the targets, known in advance,
  goes to the readout.
* :class:`PanelMetrics`: MASE, sMAPE, MAPE and RMSE per series and pooled, of the model beside the
  seasonal naive and naive forecasts on the same points (``test_mase``, ``test_snaive_mase``,
  ``test_mase_ratio``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from rnn_lightning.data.panel.calendar import cyclic_encoding
from rnn_lightning.errors import UserInputError, check_choice
from rnn_lightning.models.scaling import SCALINGS, Scaling

WINDOW_NORMS = ("none", "standard", "mean")
FORECAST_BASES = ("level", "snaive")  # what a zero network output forecasts (see PanelScaling)
# A window's own scale at or below this (in series-scaled units) counts as zero: the window is not rescaled.
WINDOW_EPS = 1e-3
# The forecasts PanelMetrics scores, in its state's first axis; and the scores, in its second.
FORECASTERS = ("model", "snaive", "naive")
SCORES = ("abs", "sq", "ape", "sape", "nonzero")  # nonzero: the points MAPE is defined at (y != 0)


class SeriesScaling:
    """One batch's scaling: each sample's affine map ``y = loc + scale * z`` (B,), float64.

    What the regression heads ask of a scaling (:class:`~rnn_lightning.models.scaling.PriceScaling`'s
    ``scale_targets``, ``to_price``, ``target_to_price``, ``target_offset``/``target_scale``, a ``level``
    target transform), per sample. An ensemble's heads tile a batch ``M`` times (member after member):
    a tensor of ``M * B`` rows is scaled with the maps tiled the same way.
    """

    target_transform = "level"

    def __init__(self, loc: Tensor, scale: Tensor, base: Tensor | None = None) -> None:
        self.loc = loc  # (B,) float64
        self.scale = scale  # (B,) float64
        self.base = base  # (B, H) float64 added to every forecast step (a seasonal naive base), or None

    def _maps(self, rows: int, dims: int) -> tuple[Tensor, Tensor]:
        """Loc and scale tiled to ``rows`` samples, shaped to broadcast over ``dims - 1`` trailing dims."""
        repeats = rows // self.loc.shape[0]  # shape, not len(): an exported graph keeps it symbolic
        shape = (-1, *([1] * (dims - 1)))
        return self.loc.repeat(repeats).reshape(shape), self.scale.repeat(repeats).reshape(shape)

    def _base(self, rows: int, dims: int) -> Tensor | float:
        """The per-step base tiled to ``rows`` samples (rows, H, 1...), or 0.0 without one."""
        if self.base is None or dims < 2:
            return 0.0
        base = self.base.repeat(rows // self.base.shape[0], 1)
        return base.reshape(*base.shape, *([1] * (dims - 2)))

    @property
    def target_offset(self) -> Tensor:
        """(B, 1), or (B, H) with a per-step base: broadcasts over the steps ahead."""
        return self.loc[:, None] if self.base is None else self.loc[:, None] + self.base

    @property
    def target_scale(self) -> Tensor:
        """(B, 1): broadcasts over the steps ahead."""
        return self.scale[:, None]

    def scale_targets(self, close: Tensor, ref: Tensor) -> Tensor:
        """Targets in the data's units (B, H) -> float32 scaled targets (B, H)."""
        loc, scale = self._maps(close.shape[0], close.dim())
        base = self._base(close.shape[0], close.dim())
        return ((close.to(torch.float64) - base - loc) / scale).to(torch.float32)

    def to_price(self, out: Tensor, ref: Tensor) -> Tensor:
        """Scaled outputs (B, ...) -> float64 values in each series' units, the same shape."""
        loc, scale = self._maps(out.shape[0], out.dim())
        return out.to(torch.float64) * scale + loc + self._base(out.shape[0], out.dim())

    def target_to_price(self, y: Tensor, ref: Tensor) -> Tensor:
        """Unscaled targets are already in the data's units (a ``level`` target): ``y`` as float64."""
        return y.to(torch.float64).expand(self.loc.shape[0], *y.shape[1:])


class PanelScaling(Scaling):
    """Per-series scaling of a panel's windows, carried as buffers; forecasts in each series' own units.

    Args:
        n_series: Series in the panel (the buffers' length).
        n_past: Past covariates after the target in each input step (standardised by their training
            mean and standard deviation over all series).
        n_static: Static covariates per series (kept, standardised, in the ``static`` buffer).
        calendar_periods: The calendar features' periods (12 for month of year ...), for the inputs.
        window_norm: ``none``; ``standard`` subtracts each window's mean and divides by its standard
            deviation (in series-scaled units, over its real steps); ``mean`` divides by its mean
            absolute value (best with the ``mean`` series scaling, whose loc is 0).
        forecast_base: ``level``: a zero network output forecasts the window's (or series') level;
            ``snaive``: the network forecasts the change from the seasonal naive forecast of its input
            window (its last ``season_length`` steps repeated; needs ``input_length >= season_length``),
            in the same units, so a zero output is the seasonal naive forecast.
        season_length: The season of the ``snaive`` base.
        horizon: The steps ahead of the ``snaive`` base.

    Buffers: ``loc``, ``scale`` (n_series,) float64; ``past_mean``, ``past_std`` (n_past,);
    ``static`` (n_series, n_static) float32; ``fitted``.
    """

    loc: Tensor
    scale: Tensor
    past_mean: Tensor
    past_std: Tensor
    static: Tensor
    fitted: Tensor

    fits_from_data = True
    raw_dtype = torch.float32  # an exported file takes the raw windows as the panel stores them

    @classmethod
    def from_spec(cls, input_size: int, spec: dict[str, Any]) -> Scaling:
        """The panel scaling of a panel data module's ``scaling_spec``; its windows have ``input_size`` columns."""
        spec = dict(spec)
        n_past = int(spec.pop("n_past", input_size - 1))
        if n_past != input_size - 1:
            raise UserInputError(f"scaling_spec names {n_past} past covariates for input_size={input_size}")
        return cls(n_past=n_past, **spec)

    def __init__(
        self,
        n_series: int,
        n_past: int = 0,
        n_static: int = 0,
        calendar_periods: Sequence[int] = (),
        window_norm: str = "none",
        forecast_base: str = "level",
        season_length: int = 1,
        horizon: int = 1,
    ) -> None:
        super().__init__()
        check_choice("window_norm", window_norm, WINDOW_NORMS)
        check_choice("forecast_base", forecast_base, FORECAST_BASES)
        if n_series < 1:
            raise UserInputError(f"a panel scaling needs at least one series, got n_series={n_series}")
        self.n_series, self.n_past, self.n_static = n_series, n_past, n_static
        self.calendar_periods = tuple(int(p) for p in calendar_periods)
        self.window_norm = window_norm
        self.forecast_base, self.season_length, self.horizon = forecast_base, int(season_length), int(horizon)
        self.register_buffer("loc", torch.zeros(n_series, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_series, dtype=torch.float64))
        self.register_buffer("past_mean", torch.zeros(n_past, dtype=torch.float64))
        self.register_buffer("past_std", torch.ones(n_past, dtype=torch.float64))
        self.register_buffer("static", torch.zeros(n_series, n_static))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def set_fitted(  # type: ignore[override]  # the statistics this scaling fits, by name
        self,
        loc: Tensor,
        scale: Tensor,
        past_mean: Tensor | None = None,
        past_std: Tensor | None = None,
        static: Tensor | None = None,
    ) -> None:
        """Install the per-series statistics a panel data module fitted on each series' training part."""
        if tuple(loc.shape) != (self.n_series,):  # copy_ would broadcast one series' values over every row
            raise ValueError(f"the scaling holds {self.n_series} series, the data fitted {tuple(loc.shape)}")
        self.loc.copy_(torch.as_tensor(loc, dtype=torch.float64))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float64))
        if past_mean is not None and past_std is not None:
            self.past_mean.copy_(torch.as_tensor(past_mean, dtype=torch.float64))
            std = torch.as_tensor(past_std, dtype=torch.float64)
            self.past_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        if static is not None:
            self.static.copy_(torch.as_tensor(static, dtype=torch.float32))
        self.fitted.fill_(True)

    def series_scaled(self, batch: Any) -> Tensor:
        """The target column of each input window in its series' scaled units (B, L), float64, padding 0."""
        series = batch.series
        z = (batch.x[..., 0].to(torch.float64) - self.loc[series, None]) / self.scale[series, None]  # (B, L)
        return torch.where(batch.mask, z, torch.zeros_like(z))

    def window_maps(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Each window's own (loc, scale) (B,) in series-scaled units, by ``window_norm`` (0 and 1 for none)."""
        if self.window_norm == "none":
            return z.new_zeros(len(z)), z.new_ones(len(z))
        real = mask.to(z.dtype)
        count = real.sum(dim=1).clamp(min=1.0)  # (B,)
        if self.window_norm == "mean":
            loc = z.new_zeros(len(z))
            spread = (z.abs() * real).sum(dim=1) / count
        else:
            loc = (z * real).sum(dim=1) / count
            spread = ((((z - loc[:, None]) * real) ** 2).sum(dim=1) / count).sqrt()
        return loc, torch.where(spread > WINDOW_EPS, spread, torch.ones_like(spread))

    def for_batch(self, batch: Any) -> SeriesScaling:
        """The batch's per-sample maps: the series' (loc, scale) composed with each window's own."""
        series = batch.series
        loc, scale = self.loc[series], self.scale[series]  # (B,)
        if self.window_norm != "none":
            w_loc, w_scale = self.window_maps(self.series_scaled(batch), batch.mask)
            loc, scale = loc + scale * w_loc, scale * w_scale
        if self.forecast_base == "level":
            return SeriesScaling(loc, scale)
        return SeriesScaling(torch.zeros_like(loc), scale, self.seasonal_base(batch))

    def seasonal_base(self, batch: Any) -> Tensor:
        """The seasonal naive forecast of each window (B, H) float64, in the data's units: its last season."""
        L = batch.x.shape[1]
        m = min(self.season_length, L)
        steps = L - m + torch.arange(self.horizon, device=batch.x.device) % m  # (H,) positions in the window
        snaive: Tensor = batch.x[:, steps, 0].to(torch.float64)
        return snaive

    def inputs(self, batch: Any) -> Tensor:
        """The scaled input windows (B, L, 1 + n_past), float32: target then past covariates, padding 0."""
        z = self.series_scaled(batch)
        if self.window_norm != "none":
            w_loc, w_scale = self.window_maps(z, batch.mask)
            z = torch.where(batch.mask, (z - w_loc[:, None]) / w_scale[:, None], torch.zeros_like(z))
        columns = [z[..., None]]
        if self.n_past:
            past = (batch.x[..., 1:].to(torch.float64) - self.past_mean) / self.past_std  # (B, L, P)
            columns.append(torch.where(batch.mask[..., None], past, torch.zeros_like(past)))
        return torch.cat(columns, dim=-1).to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"n_series={self.n_series}, n_past={self.n_past}, n_static={self.n_static}, "
            f"calendar_periods={self.calendar_periods}, window_norm={self.window_norm!r}, "
            f"forecast_base={self.forecast_base!r}"
        )


SCALINGS["panel"] = PanelScaling  # the scaling a panel data module's scaling_spec names


class MemberEmbedding(nn.Module):
    """One series embedding table per ensemble member: ``weight`` (M, n_series, E); series (B,) -> (M, B, E).

    Args:
        tables: One freshly initialised ``nn.Embedding`` per member; their weights are copied.
    """

    def __init__(self, tables: Sequence[nn.Embedding]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([table.weight for table in tables]).detach().clone())

    def forward(self, series: Tensor) -> Tensor:
        return self.weight[:, series]


class PanelInputs(nn.Module):
    """The inputs a panel model reads besides the scaled windows, and its known-in-advance readout inputs.

    Every input step gets: the padding mask (1 at a real step), the series embedding (learned, size
    ``series_embedding``; none for 0), the series' static covariates and the step's calendar features as
    sin/cos. The readout gets the targets' calendar features (sin/cos, flattened): known in advance.

    Args:
        scaling: The model's :class:`PanelScaling` (its sizes: series, static covariates, calendar).
        series_embedding: Size of the learned series embedding; 0 for none.
        horizon: Steps ahead (H).
        tables: The members' embedding tables (``nn.Embedding(n_series, series_embedding)`` each, built by
            the model in member order, so that member 0's is a solo model's): one is the solo model's
            ``embedding``; more are a :class:`MemberEmbedding`, each member reading its own table. None
            builds one table here.
    """

    def __init__(
        self,
        scaling: PanelScaling,
        series_embedding: int,
        horizon: int,
        tables: Sequence[nn.Embedding] | None = None,
    ) -> None:
        super().__init__()
        if series_embedding < 0:
            raise UserInputError(f"series_embedding must be >= 0, got {series_embedding}")
        self.periods = scaling.calendar_periods
        self.embedding: nn.Module | None = None
        if series_embedding:
            tables = tables or [self.embedding_table(scaling, series_embedding)]
            self.embedding = tables[0] if len(tables) == 1 else MemberEmbedding(tables)
        self.step_features = self.step_width(scaling, series_embedding)
        self.known_features = self.known_width(scaling, horizon)
        self.metrics = nn.ModuleDict({stage: PanelMetrics(scaling.n_series) for stage in ("val", "test")})
        self.scores: dict[str, dict[str, Tensor]] = {}  # the last epoch's per-series scores of each stage

    @staticmethod
    def step_width(scaling: PanelScaling, series_embedding: int) -> int:
        """The columns each input step gains: the mask, the embedding, static and calendar features."""
        return 1 + series_embedding + scaling.n_static + 2 * len(scaling.calendar_periods)

    @staticmethod
    def known_width(scaling: PanelScaling, horizon: int) -> int:
        """The known-in-advance readout inputs: each target step's calendar features as sin/cos."""
        return 2 * len(scaling.calendar_periods) * horizon

    @staticmethod
    def embedding_table(scaling: PanelScaling, series_embedding: int) -> nn.Embedding:
        """A freshly initialised table of ``series_embedding`` values per series (one member's)."""
        return nn.Embedding(scaling.n_series, series_embedding)

    def features(self, batch: Any, scaled: Tensor, scaling: PanelScaling) -> tuple[Tensor, Tensor | None]:
        """The network's inputs (B, L, F + step_features) and known readout inputs (B, known_features).

        With one embedding table per member the inputs are each member's: (M, B, L, F + step_features).
        """
        B, L = scaled.shape[:2]
        columns = [scaled, batch.mask[..., None].to(scaled.dtype)]
        if scaling.n_static:
            columns.append(scaling.static[batch.series].to(scaled.dtype)[:, None].expand(B, L, -1))  # (B, L, K)
        if self.periods:
            columns.append(cyclic_encoding(batch.calendar_x, self.periods))  # (B, L, 2C)
        known = cyclic_encoding(batch.calendar_y, self.periods).flatten(1) if self.periods else None  # (B, H*2C)
        if self.embedding is None:
            return torch.cat(columns, dim=-1), known
        vectors = self.embedding(batch.series).to(scaled.dtype)  # (B, E), or (M, B, E): each member's table
        lead = vectors.shape[:-2]  # () or (M,)
        rest = [c.expand(*lead, *c.shape) for c in columns]
        embedded = vectors[..., None, :].expand(*lead, B, L, -1)
        # The embedding's place among the columns is a solo model's: after the mask, before the rest.
        return torch.cat([*rest[:2], embedded, *rest[2:]], dim=-1), known

    def update(self, stage: str, prediction: Tensor, batch: Any) -> None:
        """Score one batch's point forecasts (B, H) in the data's units, beside the naive forecasts."""
        if stage in self.metrics:
            metric: Any = self.metrics[stage]
            metric.update(prediction.reshape(batch.y.shape), batch)

    def epoch_values(self, stage: str) -> dict[str, Tensor]:
        """The stage's pooled scores to log (computed across DDP ranks), its per-series ones kept; then reset."""
        if stage not in self.metrics:
            return {}
        metric: Any = self.metrics[stage]
        if not metric.update_count:
            return {}
        per_series, pooled = metric.compute()
        self.scores[stage] = per_series
        metric.reset()
        return {f"{stage}_{name}": value for name, value in pooled.items()}


class PanelMetrics(Metric):
    """Per-series sums of the model's, the seasonal naive's and the naive forecast's errors; pooled at compute.

    Args:
        n_series: Series in the panel.

    States: ``sums`` (3 forecasters, 5 scores, n_series) of absolute, squared, absolute percentage and
    symmetric absolute percentage errors and the count of points with a nonzero actual; ``counts`` and
    ``scales`` (the MASE denominators) per series; summed (counts, sums) or maxed (scales) across ranks.

    Pooled, as the forecasting competitions report them: MASE is the mean over series of each series' mean
    absolute error over its MASE scale (series with a zero scale left out); sMAPE (percent) and MAPE (a
    fraction, as the heads' ``test_mape``) are means over every point (MAPE over those with a nonzero
    actual); RMSE over every point, in the
    data's units. ``mase_ratio`` is the model's MASE over the seasonal naive's.
    """

    full_state_update = False
    sums: Tensor
    counts: Tensor
    scales: Tensor

    def __init__(self, n_series: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(len(FORECASTERS), len(SCORES), n_series, dtype=torch.float64), "sum")
        self.add_state("counts", torch.zeros(n_series, dtype=torch.float64), "sum")
        self.add_state("scales", torch.zeros(n_series, dtype=torch.float64), "max")

    def update(self, prediction: Tensor, batch: Any) -> None:
        """Add a batch: ``prediction`` (B, H) and the batch's targets, naive forecasts and MASE scales."""
        y = batch.y.to(torch.float64)  # (B, H)
        series = batch.series
        forecasts = torch.stack(
            [
                prediction.to(torch.float64),
                batch.snaive.to(torch.float64),
                batch.ref.to(torch.float64)[:, None].expand_as(y),
            ]
        )  # (3, B, H)
        error = (forecasts - y).abs()
        denominator = y.abs() + forecasts.abs()
        nonzero = (y != 0).expand_as(error)
        terms = torch.stack(
            [
                error,
                error**2,
                torch.where(nonzero, error / y.abs(), torch.zeros_like(error)),
                torch.where(denominator > 0, 2 * error / denominator, torch.zeros_like(error)),
                nonzero.to(error.dtype),
            ],
            dim=1,
        ).sum(dim=-1)  # (3, 5, B)
        index = series[None, None].expand_as(terms)
        self.sums.scatter_add_(2, index, terms)
        self.counts.scatter_add_(0, series, torch.full_like(series, y.shape[1], dtype=torch.float64))
        self.scales.scatter_reduce_(0, series, batch.mase_scale.to(torch.float64), "amax")

    def compute(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(per-series scores, pooled scores): per series (n_series,) each, NaN for a series never seen."""
        seen = self.counts > 0
        count = self.counts.clamp(min=1.0)
        mean = self.sums / count  # (3, 4, S)
        per_series: dict[str, Tensor] = {"count": self.counts}
        pooled: dict[str, Tensor] = {}
        total = self.counts.sum().clamp(min=1.0)
        for f, who in enumerate(FORECASTERS):
            prefix = "" if who == "model" else f"{who}_"
            mase = torch.where(
                seen & (self.scales > 0), mean[f, 0] / self.scales, torch.full_like(self.scales, torch.nan)
            )
            per_series.update(
                {
                    f"{prefix}mase": mase,
                    f"{prefix}smape": torch.where(seen, 100 * mean[f, 3], torch.nan),
                    f"{prefix}mape": torch.where(self.sums[f, 4] > 0, self.sums[f, 2] / self.sums[f, 4], torch.nan),
                    f"{prefix}rmse": torch.where(seen, mean[f, 1].sqrt(), torch.nan),
                }
            )
            pooled[f"{prefix}mase"] = mase.nanmean()
            pooled[f"{prefix}smape"] = 100 * self.sums[f, 3].sum() / total
            pooled[f"{prefix}mape"] = self.sums[f, 2].sum() / self.sums[f, 4].sum().clamp(min=1.0)
            pooled[f"{prefix}rmse"] = (self.sums[f, 1].sum() / total).sqrt()
        pooled["mase_ratio"] = pooled["mase"] / pooled["snaive_mase"]
        # The heads log the model's test_rmse, test_mape and the naive forecast's test_naive_rmse already.
        for name in ("rmse", "mape", "naive_rmse"):
            pooled.pop(name)
        return per_series, pooled
