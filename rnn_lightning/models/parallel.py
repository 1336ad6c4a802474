"""Both directions of a bidirectional recurrent layer at once, on two CPU threads.

torch computes a bidirectional layer's two directions one after the other. With one intra-op thread,
the fastest setting for models this small (larger thread counts spend more on handing out tiny kernels
than they save), a second core sits idle. Given the layer's input, the two directions are independent:
here the reverse direction runs on the calling thread and the forward direction on a helper thread,
in the forward pass and again in the backward pass. Each direction is the same torch kernel
(``torch.lstm`` / ``torch.gru`` / ``torch.rnn_*``, what ``nn.LSTM`` itself calls) over the layer's own
weights, so parameters, checkpoints and outputs are those of the ``nn`` module. The outputs are
bit-identical to it. The reverse direction reads a time-flipped copy, so the reverse recurrent weights'
gradients are summed over the steps in the other order and can differ in the last bits.

The kernels release the GIL, so the threads really run at once: on the row-MNIST Bi-LSTM a training step's
recurrent work takes clearly less time on a 2-core CPU (the figures are in docs/performance.md;
``benchmarks/bench_speed.py`` times the whole fit).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# nn.RNNBase.mode -> the kernel nn's module calls for it.
KERNELS: dict[str, Callable[..., Any]] = {
    "LSTM": torch.lstm,
    "GRU": torch.gru,
    "RNN_TANH": torch.rnn_tanh,
    "RNN_RELU": torch.rnn_relu,
}

_helper: ThreadPoolExecutor | None = None
_helper_pid: int | None = None
_helper_lock = threading.Lock()


def _submit(fn: Callable[..., Any], *args: Any) -> Future:
    """Run ``fn`` on the helper thread, started on first use in each process (a fork has no threads)."""
    global _helper, _helper_pid
    with _helper_lock:
        if _helper is None or _helper_pid != os.getpid():
            # torch.get_num_threads() makes the new thread take up torch's intra-op thread setting first,
            # so that its kernels open no more threads than the caller's would.
            _helper = ThreadPoolExecutor(
                1, thread_name_prefix="rnn-lightning-direction", initializer=torch.get_num_threads
            )
            _helper_pid = os.getpid()
        return _helper.submit(fn, *args)


def _direction(mode: str, x: Tensor, weights: list[Tensor], reverse: bool, train: bool) -> Tensor:
    """One direction of one layer over batch-first ``x`` (B, T, F), from zero states: (B, T, H)."""
    if reverse:
        x = x.flip(1)
    zeros = x.new_zeros(1, x.shape[0], weights[1].shape[1])
    state = (zeros, zeros) if mode == "LSTM" else zeros
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    out: Tensor = KERNELS[mode](x, state, weights, len(weights) == 4, 1, 0.0, train, False, True)[0]
    return out.flip(1) if reverse else out


class _BothDirections(torch.autograd.Function):
    """One bidirectional layer whose forward and backward passes each run the two directions at once.

    Each direction records its own small autograd graph on detached inputs; the backward pass runs
    the two graphs concurrently and hands the gradients on to the real input and weights.
    """

    @staticmethod
    def forward(ctx: Any, mode: str, train: bool, x: Tensor, *weights: Tensor) -> Tensor:
        n = len(weights) // 2
        needs = ctx.needs_input_grad

        def run(d: int) -> tuple[list[Tensor], Tensor]:
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_(needs[2])]
                own = weights[d * n : (d + 1) * n]
                leaves += [w.detach().requires_grad_(needs[3 + d * n + i]) for i, w in enumerate(own)]
                return leaves, _direction(mode, leaves[0], leaves[1:], d == 1, train)

        # The reverse direction, with its two flips, is the longer: it runs here while the helper thread
        # picks up the forward one.
        forward = _submit(run, 0)
        reverse = run(1)
        runs = (forward.result(), reverse)
        ctx.runs = runs
        return torch.cat([runs[0][1].detach(), runs[1][1].detach()], dim=2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        hidden = grad.shape[2] // 2

        def back(run: tuple[list[Tensor], Tensor], grad_out: Tensor) -> list[Tensor | None]:
            leaves, out = run
            wanted = [t for t in leaves if t.requires_grad]
            found = iter(torch.autograd.grad(out, wanted, grad_out))
            return [next(found) if t.requires_grad else None for t in leaves]

        pending = _submit(back, ctx.runs[0], grad[..., :hidden])
        reverse = back(ctx.runs[1], grad[..., hidden:])
        forward = pending.result()
        grad_x = forward[0] + reverse[0] if forward[0] is not None else None
        return (None, None, grad_x, *forward[1:], *reverse[1:])


def _both_directions_no_grad(mode: str, x: Tensor, weights: list[Tensor], train: bool) -> Tensor:
    """Evaluation: the two directions at once, with no graph recorded."""
    n = len(weights) // 2
    inference = torch.is_inference_mode_enabled()  # thread-local: the helper must be told

    def run(d: int) -> Tensor:
        with torch.inference_mode(inference), torch.no_grad():
            return _direction(mode, x, weights[d * n : (d + 1) * n], d == 1, train)

    forward = _submit(run, 0)
    reverse = run(1)
    return torch.cat([forward.result(), reverse], dim=2)


def layer_weights(rnn: nn.RNNBase, layer: int) -> list[Tensor]:
    """The forward then the reverse direction's weights of ``layer``, in the order torch's kernels take."""
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    return [getattr(rnn, f"{name}_l{layer}{suffix}") for suffix in ("", "_reverse") for name in names]


def supports(rnn: nn.RNNBase, x: Tensor) -> bool:
    """Whether :func:`bidirectional_forward` can stand in for ``rnn(x)`` here.

    CPU tensors only (cuDNN runs both directions in one call already), not under autocast (its state
    is per thread, so the helper would not see it), and not for LSTMs with projections.
    """
    return (
        rnn.bidirectional
        and rnn.batch_first
        and rnn.mode in KERNELS
        and getattr(rnn, "proj_size", 0) == 0
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
    )


def bidirectional_forward(rnn: nn.RNNBase, x: Tensor) -> Tensor:
    """``rnn(x)[0]`` from zero initial states for a batch-first bidirectional ``rnn``, two threads at once."""
    track = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in rnn.parameters()))
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:
            # Between layers, as nn's module does, and drawn in its time-major order: the same mask.
            x = F.dropout(x.transpose(0, 1).contiguous(), rnn.dropout, training=True).transpose(0, 1)
        weights = layer_weights(rnn, layer)
        if track:
            x = _BothDirections.apply(rnn.mode, rnn.training, x, *weights)
        else:
            x = _both_directions_no_grad(rnn.mode, x, weights, rnn.training)
    return x
