"""parallel_directions: the two directions of each bidirectional layer on two threads, same results as nn."""

from __future__ import annotations

import threading

import pytest
import torch

from rnn_lightning.models import parallel
from rnn_lightning.models.backbones import RecurrentBackbone


def twin_backbones(name: str, **kwargs) -> tuple[RecurrentBackbone, RecurrentBackbone]:
    """The same weights, computed by torch's module and by the two-thread path."""
    torch.manual_seed(0)
    serial = RecurrentBackbone(name, input_size=7, hidden_size=5, num_layers=3, bidirectional=True, **kwargs)
    threaded = RecurrentBackbone(
        name, input_size=7, hidden_size=5, num_layers=3, bidirectional=True, parallel_directions=True, **kwargs
    )
    threaded.load_state_dict(serial.state_dict())
    return serial, threaded


# The reverse direction reads a time-flipped copy of its input, so the input projection's matrix product
# sees its rows in the other order. Some CPUs' GEMM kernels block rows by position (torch 2.14's AVX2
# kernels do for nn.RNN), so outputs can differ from nn's in the last bits: equal up to float32 rounding.
OUTPUT_TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


def forward_backward(backbone: RecurrentBackbone, x: torch.Tensor, grad: torch.Tensor):
    backbone.zero_grad()
    x = x.detach().requires_grad_()
    out = backbone(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in backbone.named_parameters()}


@pytest.mark.parametrize("name", ["bilstm", "gru", "rnn"])
def test_same_outputs_and_gradients_as_torch(name: str) -> None:
    serial, threaded = twin_backbones(name)
    x = torch.rand(9, 6, 7)
    grad = torch.randn(9, 6, 10)
    out, x_grad, grads = forward_backward(serial, x, grad)
    out2, x_grad2, grads2 = forward_backward(threaded, x, grad)
    assert out2.shape == (9, 6, 10)
    torch.testing.assert_close(out2, out, **OUTPUT_TOLERANCE)  # the same kernels on the same inputs
    torch.testing.assert_close(x_grad2, x_grad, rtol=0, atol=1e-6)
    assert grads2.keys() == grads.keys()
    for key in grads:
        # The reverse direction reads a flipped copy, so its weight gradients sum the steps and samples in
        # another order: equal up to float32 rounding of those sums, judged against the gradient's scale
        # (an element near zero can carry the rounding of its larger neighbours' terms).
        error = (grads2[key] - grads[key]).abs().max()
        assert error <= 1e-5 * grads[key].abs().max(), (key, error)


def test_evaluation_and_inference_mode_match_torch() -> None:
    serial, threaded = twin_backbones("bilstm", dropout=0.3)
    serial.eval()
    threaded.eval()
    x = torch.rand(4, 8, 7)
    with torch.no_grad():
        expected = serial(x)
        torch.testing.assert_close(threaded(x), expected, **OUTPUT_TOLERANCE)
    with torch.inference_mode():
        torch.testing.assert_close(threaded(x), expected, **OUTPUT_TOLERANCE)


def test_training_dropout_between_layers_matches_torch() -> None:
    serial, threaded = twin_backbones("bilstm", dropout=0.5)
    x = torch.rand(4, 8, 7)
    torch.manual_seed(3)
    expected = serial(x)
    torch.manual_seed(3)
    got = threaded(x)
    torch.testing.assert_close(got, expected, **OUTPUT_TOLERANCE)  # the same dropout mask
    torch.manual_seed(4)
    assert (threaded(x) - expected).abs().max() > 1e-3  # dropout is really drawn


def test_the_two_directions_run_at_once_on_two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each direction waits at a barrier for the other: run one after the other, they would time out.
    barrier = threading.Barrier(2, timeout=20)
    forward_pass: list[tuple[bool, str]] = []
    backward_threads: list[str] = []
    direction, grad = parallel._direction, torch.autograd.grad

    def forward_at_once(mode, x, weights, reverse, train):
        forward_pass.append((reverse, threading.current_thread().name))
        barrier.wait()
        return direction(mode, x, weights, reverse, train)

    def backward_at_once(*args, **kwargs):
        backward_threads.append(threading.current_thread().name)
        barrier.wait()
        return grad(*args, **kwargs)

    monkeypatch.setattr(parallel, "_direction", forward_at_once)
    _, threaded = twin_backbones("bilstm")
    out = threaded(torch.rand(2, 4, 7))
    monkeypatch.setattr(torch.autograd, "grad", backward_at_once)
    out.sum().backward()
    caller = threading.current_thread().name
    assert len(forward_pass) == len(backward_threads) == 6  # 3 layers x 2 directions
    # The reverse direction runs on the calling thread, the forward one on the helper.
    assert {name for reverse, name in forward_pass if reverse} == {caller}
    helpers = {name for reverse, name in forward_pass if not reverse}
    assert len(helpers) == 1 and caller not in helpers
    assert set(backward_threads) == {caller} | helpers


def test_unidirectional_uses_torchs_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args):
        raise AssertionError("the two-thread path ran")

    monkeypatch.setattr("rnn_lightning.models.backbones.bidirectional_forward", fail)
    one_way = RecurrentBackbone("gru", input_size=7, hidden_size=5, parallel_directions=True)
    assert one_way(torch.rand(2, 4, 7)).shape == (2, 4, 5)


@pytest.mark.parametrize("parallel_directions", [False, True])
def test_cpu_autocast_runs_the_recurrent_layers_in_float32(parallel_directions: bool) -> None:
    # oneDNN has no bf16 LSTM kernel on CPUs without AVX-512 BF16: under bf16 autocast nn.LSTM raised
    # "could not create a primitive descriptor". The recurrence runs in float32 on every CPU instead.
    serial, threaded = twin_backbones("bilstm")
    backbone = threaded if parallel_directions else serial
    x = torch.rand(2, 4, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, serial(x), **OUTPUT_TOLERANCE)
