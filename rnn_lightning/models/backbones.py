"""Recurrent backbones chosen by name.

Each maps a batch ``(B, T, F)`` to per-step outputs ``(B, T, H*dirs)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnn_lightning.errors import check_choice
from rnn_lightning.models.parallel import bidirectional_forward, supports


@dataclass(frozen=True)
class BackboneSpec:
    """A torch recurrent layer class and whether the name implies both directions."""

    layer: Callable[..., nn.RNNBase]  # nn.RNN, nn.LSTM or nn.GRU
    bidirectional: bool = False


BACKBONES: dict[str, BackboneSpec] = {
    "rnn": BackboneSpec(nn.RNN),
    "lstm": BackboneSpec(nn.LSTM),
    "gru": BackboneSpec(nn.GRU),
    "bilstm": BackboneSpec(nn.LSTM, bidirectional=True),
}


class RecurrentBackbone(nn.Module):
    """A stack of ``num_layers`` recurrent layers, batch first, starting from zero states.

    Args:
        name: One of :data:`BACKBONES`.
        input_size: Features per time step.
        hidden_size: Hidden units per layer and direction.
        num_layers: Stacked recurrent layers.
        dropout: Dropout between stacked layers (torch applies none after the last one).
        bidirectional: Read the sequence both ways; implied by ``bilstm``.
        parallel_directions: On the CPU, compute the two directions of each bidirectional layer at
            once on two threads (:mod:`rnn_lightning.models.parallel`); same weights and outputs. Read at
            every call: set the attribute to False for a graph an exporter can trace.
    """

    def __init__(
        self,
        name: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        parallel_directions: bool = False,
    ) -> None:
        super().__init__()
        check_choice("backbone", name, BACKBONES)
        spec = BACKBONES[name]
        self.bidirectional = bidirectional or spec.bidirectional
        self.parallel_directions = parallel_directions
        self.rnn = spec.layer(
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=self.bidirectional,
            batch_first=True,
        )

    @property
    def output_size(self) -> int:
        return self.rnn.hidden_size * (2 if self.bidirectional else 1)

    def weights_compact(self) -> bool:
        """Whether the recurrent weights share one buffer, as cuDNN wants them (never on the CPU)."""
        return len({w.untyped_storage().data_ptr() for w in self.rnn.parameters()}) == 1

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU autocast would hand the recurrent layer bfloat16, and oneDNN has no bf16 LSTM kernel on
            # CPUs without AVX-512 BF16 ("could not create a primitive descriptor"); the recurrence also
            # accumulates its state over every step, which bf16 rounds badly. The recurrent layers run in
            # float32 on every CPU; the readout and head after them still run under autocast.
            with torch.autocast("cpu", enabled=False):
                return self._recur(x.float())
        return self._recur(x)

    def _recur(self, x: Tensor) -> Tensor:
        """The recurrent stack over ``x`` (B, T, F) in its own dtype: (B, T, H*dirs)."""
        if x.is_cuda and not self.weights_compact():
            # Moving to the GPU compacts the weights and DDP's broadcast copies into them in place, but
            # anything that rebinds a weight (load_state_dict(assign=True), a wrapper) scatters them: cuDNN
            # would then copy them on every call and warn. Compact them once, here.
            self.rnn.flatten_parameters()
        if self.parallel_directions and supports(self.rnn, x):
            return bidirectional_forward(self.rnn, x)
        # Without an initial state torch starts from zeros, as the tutorial does explicitly.
        out: Tensor
        out, _ = self.rnn(x)  # (B, T, H*dirs)
        return out
