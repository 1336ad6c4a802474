"""Ensembles (``--model.members N``): each member of a packed model is its solo model.

A packed model whose members start from the weights of N solo models takes one training step on the
same batch in float64; every member's gradients, clipped gradients and Adam update must equal its solo
model's (torch's own ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and ``nn.Linear``), for every backbone, readout
and head. The combined forecasts are checked against formulas computed here with numpy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rnn_lightning.data.batches import Images, PriceWindows
from rnn_lightning.models.heads import member_quantiles
from rnn_lightning.models.members import MemberRecurrence
from rnn_lightning.models.module import RecurrentModel

MEMBERS = 3
B, T, F = 6, 5, 4
REL = 1e-12


def price_batch(seed: int = 0) -> PriceWindows:
    g = torch.Generator().manual_seed(seed)
    base = 2000 * torch.exp(torch.cumsum(0.01 * torch.randn(B, T + 1, generator=g, dtype=torch.float64), 1))
    x = base[:, :T, None] * (1 + 0.01 * torch.rand(B, T, F, generator=g, dtype=torch.float64))
    x[..., 3] = 1e6 * torch.rand(B, T, generator=g, dtype=torch.float64)  # a volume column
    return PriceWindows(x, base[:, T - 1], base[:, T])


def image_batch(seed: int = 0) -> Images:
    g = torch.Generator().manual_seed(seed)
    return Images(
        torch.randint(0, 256, (B, T, F), generator=g, dtype=torch.uint8), torch.randint(0, 10, (B,), generator=g)
    )


def build(members: int, seed: int, backbone: str, readout: str, head: str) -> RecurrentModel:
    torch.manual_seed(seed)
    task = "classification" if head == "classification" else "regression"
    model = RecurrentModel(
        backbone=backbone,
        hidden_size=4,
        num_layers=2,
        readout=readout,
        head=head,
        task=task,
        input_size=F,
        sequence_length=T,
        num_outputs=10 if task == "classification" else 1,
        members=members,
    ).double()
    if task == "regression":
        batch = price_batch()
        x = batch.x.reshape(-1, F)
        model.scaling.set_fitted(
            feature_min=x.min(0).values, feature_max=x.max(0).values, target_offset=1990.0, target_scale=40.0
        )
    return model


def solo_pairs(
    packed: RecurrentModel, solo: RecurrentModel, member: int
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, the packed parameter's slice of ``member``, the solo parameter) for every weight."""
    rnn: MemberRecurrence = packed.backbone.rnn  # type: ignore[assignment]
    pairs = []
    for name in rnn.member_state(member):
        k, d = name.split("_l")[1].split("_")[0], 1 if name.endswith("_reverse") else 0
        stacked = getattr(rnn, f"{name.split('_l')[0]}_l{k}")
        pairs.append((name, stacked, (member, d), getattr(solo.backbone.rnn, name)))
    pairs.append(("fc.weight", packed.fc.weight, (member,), solo.fc.weight))
    pairs.append(("fc.bias", packed.fc.bias, (member,), solo.fc.bias))
    return [(name, p, index, q) for name, p, index, q in pairs]


def load_solos(packed: RecurrentModel, solos: list[RecurrentModel]) -> None:
    with torch.no_grad():
        for m, solo in enumerate(solos):
            for _, p, index, q in solo_pairs(packed, solo, m):
                p[index].copy_(q)


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().max().item()
    diff = (got - want).abs().max().item()
    # All zero on both sides only where no gradient can reach (the last step of a reverse direction under
    # the "last" readout never multiplies a state); everywhere else a vacuous comparison would be a bug.
    assert scale > 0 or (diff == 0 and "weight_hh" in name and "reverse" in name), f"{name}: all zero"
    assert diff <= REL * scale, f"{name}: max abs difference {diff:.3g} vs scale {scale:.3g}"


def train_step(model: RecurrentModel, batch, clip: float | None = None) -> None:
    optimizer = model.configure_optimizers()
    loss = model.training_step(batch, 0)
    loss.backward()
    if clip is not None:
        if model.hparams.members > 1:
            model.configure_gradient_clipping(optimizer, clip, "norm")
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()


CASES = list(
    itertools.product(
        ("rnn", "lstm", "gru", "bilstm"), ("flatten", "last"), ("point", "quantile", "gaussian", "classification")
    )
)


@pytest.mark.parametrize(("backbone", "readout", "head"), CASES)
def test_each_member_trains_as_its_solo_model(backbone: str, readout: str, head: str) -> None:
    solos = [build(1, seed, backbone, readout, head) for seed in (11, 12, 13)]
    packed = build(MEMBERS, 99, backbone, readout, head)
    load_solos(packed, solos)
    batch = image_batch() if head == "classification" else price_batch()
    # The packed loss is the sum of the solo losses.
    with torch.no_grad():
        total = sum(solo.training_step(batch, 0) for solo in solos)
        assert_close("loss", packed.training_step(batch, 0), total)
    train_step(packed, batch)
    for solo in solos:
        train_step(solo, batch)
    for m, solo in enumerate(solos):
        for name, p, index, q in solo_pairs(packed, solo, m):
            assert_close(f"member {m} {name} gradient", p.grad[index], q.grad)
            assert_close(f"member {m} {name} after Adam", p.detach()[index], q.detach())


@pytest.mark.parametrize("backbone", ["rnn", "gru", "bilstm"])
def test_gradient_clipping_is_per_member(backbone: str) -> None:
    solos = [build(1, seed, backbone, "flatten", "point") for seed in (1, 2, 3)]
    packed = build(MEMBERS, 5, backbone, "flatten", "point")
    load_solos(packed, solos)
    batch = price_batch(1)
    # Small enough to clip every member, each by its own factor.
    train_step(packed, batch, clip=1e-3)
    for solo in solos:
        train_step(solo, batch, clip=1e-3)
    for m, solo in enumerate(solos):
        for name, p, index, q in solo_pairs(packed, solo, m):
            assert_close(f"member {m} {name} clipped gradient", p.grad[index], q.grad)
            assert_close(f"member {m} {name} after Adam", p.detach()[index], q.detach())


def test_members_start_as_solo_models_drawn_in_turn() -> None:
    """Member 0 is the solo model of the same seed; the others are independent draws, all different."""
    packed = build(MEMBERS, 7, "gru", "flatten", "point")
    solo = build(1, 7, "gru", "flatten", "point")
    for name, p, index, q in solo_pairs(packed, solo, 0):
        assert torch.equal(p.detach()[index], q.detach()), name
    weights = packed.fc.weight.detach()
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])


def member_outputs(packed: RecurrentModel, batch) -> torch.Tensor:
    with torch.no_grad():
        return packed.outputs(batch)


def test_point_ensemble_forecast_is_the_members_mean_and_interval_their_quantiles() -> None:
    packed = build(5, 3, "gru", "flatten", "point")
    batch = price_batch(2)
    out = member_outputs(packed, batch)  # (M, B, 1)
    scaling = packed.scaling
    prices = np.stack([scaling.to_price(out[m, :, 0], batch.ref).numpy() for m in range(5)])  # (M, B)
    with torch.no_grad():
        rows = packed.forecast(batch)  # the network's outputs are rounded to float32 on the way
    np.testing.assert_allclose(rows["prediction"].numpy(), prices.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rows["quantiles"].numpy(), np.quantile(prices, [0.1, 0.5, 0.9], axis=0).T, rtol=1e-6)


def test_member_quantiles_match_numpy() -> None:
    values = torch.randn(7, 4, 3, dtype=torch.float64)
    levels = [0.05, 0.1, 0.5, 0.77, 0.9, 1.0]
    np.testing.assert_allclose(
        member_quantiles(values, levels).numpy(), np.moveaxis(np.quantile(values.numpy(), levels, axis=0), 0, -1)
    )


def test_quantile_ensemble_averages_the_members_quantiles() -> None:
    packed = build(4, 3, "lstm", "last", "quantile")
    batch = price_batch(3)
    out = member_outputs(packed, batch)
    head = packed.head.inner
    each = torch.stack([head.scaled_quantiles(out[m]) for m in range(4)]).numpy()  # (M, B, H, Q)
    combined = head.scaled_quantiles(packed.head.combine(out).double()).numpy()
    np.testing.assert_allclose(combined, each.mean(0), rtol=1e-9, atol=1e-12)


def test_gaussian_ensemble_matches_the_mixtures_mean_and_variance() -> None:
    packed = build(4, 3, "rnn", "flatten", "gaussian")
    batch = price_batch(4)
    out = member_outputs(packed, batch)
    head = packed.head.inner
    means = np.stack([head.scaled_params(out[m])[0].numpy() for m in range(4)])  # (M, B, H)
    scales = np.stack([head.scaled_params(out[m])[1].numpy() for m in range(4)])
    mean, scale = head.scaled_params(packed.head.combine(out))
    np.testing.assert_allclose(mean.numpy(), means.mean(0), rtol=1e-12)
    # The mixture's variance: E[var] + Var[mean] (population variance over members).
    np.testing.assert_allclose(scale.numpy() ** 2, (scales**2).mean(0) + means.var(0), rtol=1e-9)


def test_classification_ensemble_averages_probabilities() -> None:
    packed = build(4, 3, "bilstm", "flatten", "classification")
    batch = image_batch(5)
    out = member_outputs(packed, batch)
    each = np.exp(out.numpy() - out.numpy().max(-1, keepdims=True))
    each /= each.sum(-1, keepdims=True)
    with torch.no_grad():
        rows = packed.forecast(batch)
    np.testing.assert_allclose(rows["probabilities"].double().numpy(), each.mean(0), rtol=1e-6)
    assert math.isclose(float(rows["probabilities"].sum(-1).mean()), 1.0, rel_tol=1e-6)
