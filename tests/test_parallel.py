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
    threaded = RecurrentBackbone(name, input_size=7, hidden_size=5, num_layers=3, bidirectional=True,
                                 parallel_directions=True, **kwargs)
    threaded.load_state_dict(serial.state_dict())
    return serial, threaded


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
    assert torch.equal(out, out2)  # the same kernels on the same inputs
    torch.testing.assert_close(x_grad2, x_grad, rtol=0, atol=1e-6)
    assert grads2.keys() == grads.keys()
    for key in grads:
        # The reverse direction reads a flipped copy, so its recurrent gradient sums the steps in the
        # other order: equal up to rounding.
        torch.testing.assert_close(grads2[key], grads[key], rtol=1e-5, atol=1e-6, msg=key)


def test_evaluation_and_inference_mode_match_torch() -> None:
    serial, threaded = twin_backbones("bilstm", dropout=0.3)
    serial.eval()
    threaded.eval()
    x = torch.rand(4, 8, 7)
    with torch.no_grad():
        expected = serial(x)
        assert torch.equal(threaded(x), expected)
    with torch.inference_mode():
        assert torch.equal(threaded(x), expected)


def test_training_dropout_between_layers_matches_torch() -> None:
    serial, threaded = twin_backbones("bilstm", dropout=0.5)
    x = torch.rand(4, 8, 7)
    torch.manual_seed(3)
    expected = serial(x)
    torch.manual_seed(3)
    got = threaded(x)
    assert torch.equal(got, expected)
    torch.manual_seed(4)
    assert not torch.equal(threaded(x), expected)  # dropout is really drawn


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


def test_autocast_and_unidirectional_use_torchs_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args):
        raise AssertionError("the two-thread path ran")

    serial, threaded = twin_backbones("bilstm")
    x = torch.rand(2, 4, 7)
    monkeypatch.setattr(parallel, "bidirectional_forward", fail)
    monkeypatch.setattr("rnn_lightning.models.backbones.bidirectional_forward", fail)
    # autocast's state is per thread, which the helper would not share
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(threaded(x), serial(x))
    one_way = RecurrentBackbone("gru", input_size=7, hidden_size=5, parallel_directions=True)
    assert one_way(x).shape == (2, 4, 5)
