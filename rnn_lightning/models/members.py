"""N networks of one shape computed together: the members of an ensemble (``--model.members N``).

Each member is a solo model's recurrent stack and output layer. Their weights are stacked along a leading
member dimension, and every member's recurrence runs in the same kernels: at each time step one batched
matrix product (``torch.baddbmm``) over all members *and* both directions (the "lanes"), then the cell's
element-wise gates over all lanes at once. The number of kernels a step launches does not grow with the
members, and the arithmetic grows linearly with them: where a solo model's step is mostly kernel launches
(the tutorial KOSPI GRU), many members cost little more than one; where it is mostly arithmetic (the MNIST
Bi-LSTM), they cost about what as many solo models would.

Why not torch's own recurrent layers: ``torch.func``'s stacked-module ensembling cannot vmap over
``nn.GRU``/``nn.LSTM``, and one wide ``nn.GRU`` with block-diagonal weights (cross-member blocks kept at
zero) multiplies ``M`` times more weights than it needs at every step. docs/ensembles.md has the
measurements (``benchmarks/bench_members.py``).

The gates follow torch's equations and gate order (``nn.RNN`` with tanh, ``nn.LSTM``: i, f, g, o,
``nn.GRU``: r, z, n), and each member is initialised as a solo model would be (the constructors copy the
weights of freshly built solo layers), so a member computes what its solo model computes, up to float
rounding: ``tests/test_members.py`` checks gradients and Adam updates against solo models in float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnn_lightning.models.backbones import RecurrentBackbone

# nn.RNNBase.mode -> gates per hidden unit (rows of weight_ih / weight_hh per unit).
GATES: dict[str, int] = {"RNN_TANH": 1, "LSTM": 4, "GRU": 3}
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _suffixes(bidirectional: bool) -> tuple[str, ...]:
    return ("", "_reverse") if bidirectional else ("",)


class MemberRecurrence(nn.Module):
    """The recurrent stacks of ``M`` members, batch first, from zero states.

    Args:
        layers: One freshly initialised torch recurrent layer per member (``nn.RNN`` with tanh,
            ``nn.LSTM`` without projections, or ``nn.GRU``), all of one shape and with biases. Their
            weights are copied; the layers themselves are not kept.

    Parameters ``weight_ih_l{k}`` (M, D, G*H, In), ``weight_hh_l{k}`` (M, D, G*H, H), ``bias_ih_l{k}``
    and ``bias_hh_l{k}`` (M, D, G*H) hold member ``m``'s direction ``d`` (0 forward, 1 reverse) of layer
    ``k`` at ``[m, d]``, exactly as the solo layer's ``weight_ih_l{k}`` / ``..._reverse``.
    """

    def __init__(self, layers: Sequence[nn.RNNBase]) -> None:
        super().__init__()
        first = layers[0]
        if first.mode not in GATES or not first.bias or (isinstance(first, nn.LSTM) and first.proj_size):
            raise ValueError(f"cannot stack {type(first).__name__} layers (mode {first.mode})")
        self.mode = first.mode
        self.members = len(layers)
        self.hidden_size = first.hidden_size
        self.num_layers = first.num_layers
        self.bidirectional = first.bidirectional
        self.directions = 2 if first.bidirectional else 1
        self.dropout = first.dropout
        for k in range(self.num_layers):
            for name in WEIGHT_NAMES:
                stacked = torch.stack(
                    [
                        torch.stack([getattr(layer, f"{name}_l{k}{sfx}") for sfx in _suffixes(self.bidirectional)])
                        for layer in layers
                    ]
                )
                self.register_parameter(f"{name}_l{k}", nn.Parameter(stacked.detach().clone()))

    def member_state(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights under a solo torch layer's names (``weight_ih_l0_reverse``, ...)."""
        state = {}
        for k in range(self.num_layers):
            for name in WEIGHT_NAMES:
                stacked = getattr(self, f"{name}_l{k}")
                for d, sfx in enumerate(_suffixes(self.bidirectional)):
                    state[f"{name}_l{k}{sfx}"] = stacked[member, d]
        return state

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, T, F), the same for every member, or (M, B, T, F) -> (M, B, T, D*H)."""
        # Inside, a layer's output is kept as (T, M, D*H, B): hidden units before the batch, so that each
        # gate's slice of a step is one contiguous block per lane (fast element-wise kernels).
        y = x.permute(1, 2, 0) if x.dim() == 3 else x.permute(2, 0, 3, 1)  # (T, F, B) or (T, M, F, B)
        for k in range(self.num_layers):
            if k and self.dropout and self.training:
                y = F.dropout(y, self.dropout, training=True)  # between layers, as torch's layers do
            y = self._layer(k, y)
        return y.permute(1, 3, 0, 2).contiguous()  # (M, B, T, D*H)

    def _projected_inputs(self, k: int, y: Tensor) -> Tensor:
        """Layer ``k``'s input projections ``W_ih y + b_ih`` for every lane and step: (T, M*D, G*H, B)."""
        w_ih: Tensor = getattr(self, f"weight_ih_l{k}")  # (M, D, GH, In)
        b_ih: Tensor = getattr(self, f"bias_ih_l{k}")  # (M, D, GH)
        M, D, GH, In = w_ih.shape
        if y.dim() == 3:  # one input (T, In, B) for every member: a single matrix product
            T, _, B = y.shape
            flat = y.permute(1, 0, 2).reshape(In, T * B)
            xi = torch.addmm(b_ih.reshape(-1, 1), w_ih.reshape(M * D * GH, In), flat).reshape(M, D, GH, T, B)
        else:  # each member's own input (T, M, In, B): one product per member, batched
            T, _, _, B = y.shape
            flat = y.permute(1, 2, 0, 3).reshape(M, In, T * B)
            xi = torch.baddbmm(b_ih.reshape(M, D * GH, 1), w_ih.reshape(M, D * GH, In), flat).reshape(M, D, GH, T, B)
        xi = xi.permute(3, 0, 1, 2, 4)  # (T, M, D, GH, B)
        if D == 2:  # the reverse direction reads the sequence from its end
            forward, reverse = xi.unbind(2)
            xi = torch.stack([forward, reverse.flip(0)], dim=2)
        return xi.reshape(T, M * D, GH, B)

    def _layer(self, k: int, y: Tensor) -> Tensor:
        """One layer over every lane: input (T, In, B) or (T, M, In, B) -> (T, M, D*H, B)."""
        xi = self._projected_inputs(k, y)  # (T, L, GH, B), L = M*D lanes
        T, L, GH, B = xi.shape
        H, M, D = self.hidden_size, self.members, self.directions
        w_hh = getattr(self, f"weight_hh_l{k}").reshape(L, GH, H)
        b_hh = getattr(self, f"bias_hh_l{k}").reshape(L, GH, 1)
        h: Tensor | None = None
        c: Tensor | None = None
        steps = []
        # unbind, not xi[t]: each indexing's backward would write a zero tensor of all T steps.
        for gi in xi.unbind(0):
            # From zero states the first step's recurrent term is the bias alone.
            gh = b_hh if h is None else torch.baddbmm(b_hh, w_hh, h)  # (L, GH, B or 1)
            h, c = self._cell(gi, gh, h, c)
            steps.append(h)
        out = torch.stack(steps)  # (T, L, H, B)
        if D == 1:
            return out
        forward, reverse = out.reshape(T, M, D, H, B).unbind(2)
        return torch.cat([forward, reverse.flip(0)], dim=2)  # the reverse lanes' steps back in time order

    def _cell(self, gi: Tensor, gh: Tensor, h: Tensor | None, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step of every lane: input and recurrent projections (L, GH, B) -> new h (L, H, B) (and c)."""
        H = self.hidden_size
        # split, not slices: a slice's backward writes a zero tensor of the whole input.
        if self.mode == "RNN_TANH":
            return torch.tanh(gi + gh), None
        if self.mode == "GRU":
            gi_rz, gi_n = gi.split((2 * H, H), dim=1)
            gh_rz, gh_n = gh.split((2 * H, H), dim=1)
            r, z = torch.sigmoid(gi_rz + gh_rz).split(H, dim=1)
            n = torch.tanh(gi_n + r * gh_n)
            # h' = (1 - z) * n + z * h
            return (n - z * n if h is None else n + z * (h - n)), None
        gates = gi + gh  # LSTM: i, f, g, o
        i, f, g, o = gates.split(H, dim=1)
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        g = torch.tanh(g)
        c = i * g if c is None else f * c + i * g
        return o * torch.tanh(c), c


class MemberBackbone(RecurrentBackbone):
    """The backbones of ``M`` members as one: ``(B, T, F)`` -> ``(M, B, T, H*dirs)``.

    Args:
        solos: One freshly built :class:`RecurrentBackbone` per member; their weights are copied.

    ``parallel_directions`` is unused: the members' recurrence runs both directions in the same kernels.
    """

    rnn: MemberRecurrence  # type: ignore[assignment]

    def __init__(self, solos: Sequence[RecurrentBackbone]) -> None:
        nn.Module.__init__(self)  # the solo backbones built the layers; only their weights are taken
        self.bidirectional = solos[0].bidirectional
        self.parallel_directions = False
        self.rnn = MemberRecurrence([solo.rnn for solo in solos])

    def weights_compact(self) -> bool:
        return True  # no cuDNN call: nothing to compact

    def _recur(self, x: Tensor) -> Tensor:
        out: Tensor = self.rnn(x)
        return out


class MemberLinear(nn.Module):
    """``M`` linear layers applied to their own members' features: (M, B, W) -> (M, B, K).

    Args:
        linears: One freshly initialised ``nn.Linear`` per member; their weights are copied.
    """

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([lin.weight for lin in linears]).detach().clone())  # (M, K, W)
        self.bias = nn.Parameter(torch.stack([lin.bias for lin in linears]).detach().clone())  # (M, K)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))


@torch.no_grad()
def clip_member_norms(parameters: Iterable[Tensor], members: int, max_norm: float) -> Tensor:
    """Clip each member's gradients to a total 2-norm of at most ``max_norm``, as a solo model's would be.

    Every parameter's first dimension is the member. Each member's norm is taken over its own slices of
    all gradients, and its slices are scaled by ``max_norm / (norm + 1e-6)`` where that is below one:
    ``torch.nn.utils.clip_grad_norm_``'s rule, per member. Returns the members' norms before clipping (M,).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(members)
    squares = torch.stack([g.reshape(members, -1).pow(2).sum(dim=1) for g in grads]).sum(dim=0)  # (M,)
    norms = squares.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(members, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms
