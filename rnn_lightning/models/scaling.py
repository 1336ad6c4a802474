"""The model's own input scaling and output transform: raw data in, the data's units out.

A data module decides and fits the scaling on its training rows only; the model carries it as buffers,
so its ``state_dict`` (and every checkpoint, and an exported file) holds it. Metrics, plots,
``predict``, the backtest and export therefore take a model and raw batches, and nothing downstream has
to ask the data module how to turn an output into a price.

* :class:`PriceScaling` (regression on daily prices). Inputs: raw windows ``x`` (B, T, F) in the CSV's
  units and each window's last close ``ref`` (B,). With ``window_norm`` the price columns become
  ``x / ref - 1``; then every column is min-max scaled. Targets: the next close(s) become ``level``,
  ``diff`` or ``log_return`` against ``ref``, then ``(y - offset) / scale``. Outputs go the other way.
* :class:`PixelScaling` (row-sequence images): uint8 pixels (B, 28, 28) to float32 in [0, 1].

Both say what they need through the interface of :class:`Scaling`, so the model and the export never ask
which one they hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnn_lightning.errors import UserInputError, check_choice

# Columns measured in index points; per-window normalisation divides these by the window's last close.
PRICE_COLUMNS = frozenset({"Open", "High", "Low", "Close", "Adj Close"})
WINDOW_NORMS = ("none", "last_close")


@dataclass(frozen=True)
class TargetTransform:
    """How a future close becomes a training target, given the window's last close ``ref``."""

    forward: Callable[[Tensor, Tensor], Tensor]
    inverse: Callable[[Tensor, Tensor], Tensor]
    centred_at_zero: bool  # True when 0 means "no change", i.e. the persistence forecast


TARGET_TRANSFORMS: dict[str, TargetTransform] = {
    "level": TargetTransform(lambda close, ref: close, lambda y, ref: y, centred_at_zero=False),
    "diff": TargetTransform(lambda close, ref: close - ref, lambda y, ref: ref + y, centred_at_zero=True),
    "log_return": TargetTransform(
        lambda close, ref: torch.log(close / ref), lambda y, ref: ref * torch.exp(y), centred_at_zero=True
    ),
}


def normalise_windows(x: Tensor, ref: Tensor, price_mask: Tensor) -> Tensor:
    """Price columns of raw windows (B, T, F) made relative to each window's last close ``ref`` (B,)."""
    relative = x / ref[:, None, None] - 1.0  # (B, T, F)
    return torch.where(price_mask, relative, x)


class Scaling(nn.Module):
    """What the model and the export ask of a scaling, whichever it is.

    Attributes:
        fits_from_data: Whether a data module fits statistics into it (:meth:`set_fitted`) on its
            training rows.
        raw_dtype: The dtype an exported file takes the raw inputs in.
    """

    fits_from_data: bool = False
    raw_dtype: torch.dtype = torch.float32

    @property
    def needs_reference(self) -> bool:
        """Whether each sample's last close (a batch's ``ref``) is read, besides its raw inputs ``x``."""
        return False

    @property
    def is_fitted(self) -> bool:
        """Whether it holds the statistics it needs (always, when it fits none)."""
        return True

    def inputs(self, batch: Any) -> Tensor:
        """A raw batch's network inputs, float32."""
        raise NotImplementedError

    @classmethod
    def from_spec(cls, input_size: int, spec: dict[str, Any]) -> Scaling:
        """The scaling a data module's ``scaling_spec`` (less its ``type``) describes, for ``input_size`` features."""
        return cls(**spec)

    def set_fitted(self, **statistics: Any) -> None:
        """Install the statistics a data module fitted on its training rows."""
        raise TypeError(f"{type(self).__name__} fits nothing from data")


class PriceScaling(Scaling):
    """Raw price windows to model inputs, scaled targets, and model outputs back to prices.

    Args:
        features: The input columns, in order (price columns are the ones window_norm divides).
        target_transform: ``level``, ``diff`` or ``log_return`` against the window's last close.
        window_norm: ``none``, or ``last_close`` to divide each window's price columns by its last close.

    Buffers (all in the ``state_dict``): ``feature_min``/``feature_span`` (F,), ``target_offset`` and
    ``target_scale`` (float64 scalars), and ``fitted``, false until :meth:`set_fitted` is called.
    """

    # Buffers (typed for mypy: nn.Module's __getattr__ would say Tensor | Module).
    price_mask: Tensor
    feature_min: Tensor
    feature_span: Tensor
    target_offset: Tensor
    target_scale: Tensor
    fitted: Tensor

    fits_from_data = True  # the data module fits the feature ranges and target scale on its training rows
    raw_dtype = torch.float64  # an exported file takes raw windows (and last closes) as float64

    @classmethod
    def from_spec(cls, input_size: int, spec: dict[str, Any]) -> Scaling:
        """Price scaling of ``spec``'s ``features`` (``x0``, ``x1`` ... when it names none)."""
        spec = dict(spec)
        features = spec.pop("features", None) or [f"x{i}" for i in range(input_size)]
        if len(features) != input_size:
            raise UserInputError(f"scaling_spec names {len(features)} features for input_size={input_size}")
        return cls(features, **spec)

    def __init__(self, features: list[str], target_transform: str = "level", window_norm: str = "none") -> None:
        super().__init__()
        check_choice("target_transform", target_transform, TARGET_TRANSFORMS)
        check_choice("window_norm", window_norm, WINDOW_NORMS)
        self.features = list(features)
        self.target_transform = target_transform
        self.window_norm = window_norm
        num = len(self.features)
        self.register_buffer("price_mask", torch.tensor([f in PRICE_COLUMNS for f in self.features]))
        self.register_buffer("feature_min", torch.zeros(num, dtype=torch.float64))
        self.register_buffer("feature_span", torch.ones(num, dtype=torch.float64))
        self.register_buffer("target_offset", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("target_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def transform(self) -> TargetTransform:
        return TARGET_TRANSFORMS[self.target_transform]

    @property
    def needs_reference(self) -> bool:
        """Whether each window's last close ``ref`` is read: a relative target or window normalisation."""
        return self.target_transform != "level" or self.window_norm != "none"

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`set_fitted` has installed a data module's statistics."""
        return bool(self.fitted)

    def inputs(self, batch: Any) -> Tensor:
        """A raw batch's network inputs (B, T, F) float32, from its windows ``x`` and last closes ``ref``."""
        return self.scale_inputs(batch.x, batch.ref)

    def windows(self, x: Tensor, ref: Tensor) -> Tensor:
        """Raw windows (B, T, F) as the scaling sees them: window-normalised if asked, still unscaled."""
        x = x.to(torch.float64)
        if self.window_norm == "last_close":
            x = normalise_windows(x, ref.to(torch.float64), self.price_mask)
        return x

    def targets(self, close: Tensor, ref: Tensor) -> Tensor:
        """Future closes (B,) or (B, H) as unscaled targets against ``ref`` (B,)."""
        ref = ref.to(torch.float64)
        if close.dim() == 2:
            ref = ref[:, None]
        return self.transform.forward(close.to(torch.float64), ref)

    def set_fitted(  # type: ignore[override]  # the statistics this scaling fits, by name
        self, feature_min: Tensor, feature_max: Tensor, target_offset: float, target_scale: float
    ) -> None:
        """Install the statistics a data module fitted on its training rows."""
        span = (feature_max - feature_min).to(torch.float64)
        self.feature_min.copy_(feature_min.to(torch.float64))
        self.feature_span.copy_(torch.where(span == 0, torch.ones_like(span), span))  # a constant column -> 0
        self.target_offset.fill_(float(target_offset))
        self.target_scale.fill_(float(target_scale) if target_scale > 0 else 1.0)
        self.fitted.fill_(True)

    def scale_inputs(self, x: Tensor, ref: Tensor) -> Tensor:
        """Raw windows (B, T, F) and last closes (B,) -> the network's float32 inputs (B, T, F)."""
        return ((self.windows(x, ref) - self.feature_min) / self.feature_span).to(torch.float32)

    def scale_targets(self, close: Tensor, ref: Tensor) -> Tensor:
        """Future closes (B,) or (B, H) -> float32 training targets of the same shape."""
        return ((self.targets(close, ref) - self.target_offset) / self.target_scale).to(torch.float32)

    def to_price(self, out: Tensor, ref: Tensor) -> Tensor:
        """Network outputs (B, ...) in scaled target units -> float64 prices of the same shape.

        ``ref`` (B,) is each window's last close; it is broadcast over the trailing dimensions (days ahead,
        quantiles).
        """
        return self.target_to_price(out.to(torch.float64) * self.target_scale + self.target_offset, ref)

    def target_to_price(self, y: Tensor, ref: Tensor) -> Tensor:
        """Unscaled targets ``y`` (B, ...) or (1, ...) -> float64 prices of the same shape.

        ``y`` is in the target transform's units (index points, differences or log returns); ``ref`` (B,)
        is broadcast over the trailing dimensions (days ahead, quantiles).

        Every inverse increases with ``y``, so quantiles of ``y`` map to the same quantiles of the price.
        """
        ref = ref.to(torch.float64).reshape(-1, *([1] * (y.dim() - 1)))
        return self.transform.inverse(y.to(torch.float64), ref)

    def extra_repr(self) -> str:
        return f"features={self.features}, target_transform={self.target_transform!r}, window_norm={self.window_norm!r}"


class PixelScaling(Scaling):
    """uint8 pixels (B, 28, 28) -> float32 in [0, 1], as torchvision's ``ToTensor``; floats pass through."""

    raw_dtype = torch.uint8  # an exported file takes the pixels as they are stored; nothing to fit

    def inputs(self, batch: Any) -> Tensor:
        """A raw batch's network inputs (B, 28, 28) float32, from its pixels ``x``."""
        return self.scale_inputs(batch.x)

    def scale_inputs(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


# The scaling a data module's ``scaling_spec["type"]`` names.
SCALINGS: dict[str, type[Scaling]] = {"prices": PriceScaling, "pixels": PixelScaling}
# Checkpoints from before scaling specs named their type: a model of that task had no spec at all.
LEGACY_SPECS: dict[str, dict[str, Any]] = {"classification": {"type": "pixels"}}
