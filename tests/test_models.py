"""Every backbone x readout x head: shapes, a finite loss, and one optimisation step that lowers it."""

from __future__ import annotations

import pytest
import torch

from rnn_lightning import BACKBONES, RecurrentModel, UserInputError
from rnn_lightning.data.batches import Images, PriceWindows

OUTPUTS_PER_TASK = {"regression": 1, "classification": 10}


def batch_for(task: str, n: int = 16, steps: int = 5, features: int = 4) -> PriceWindows | Images:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, steps, features, generator=generator)
    if task == "regression":
        # A next close the model can fit; the unfitted scaling is the identity.
        ref = torch.ones(n, dtype=torch.float64)
        return PriceWindows(x.double(), ref, (x[:, -1, 0] * 0.5 + 0.1).double())
    return Images(x, (x[:, -1, 0] * 10).long().clamp(max=9))  # (B,) labels


@pytest.mark.parametrize("task", OUTPUTS_PER_TASK)
@pytest.mark.parametrize("readout", ["flatten", "last"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_forward_loss_and_one_step(backbone: str, readout: str, task: str) -> None:
    torch.manual_seed(0)
    model = RecurrentModel(
        backbone=backbone,
        hidden_size=6,
        num_layers=2,
        readout=readout,
        task=task,
        input_size=4,
        sequence_length=5,
        num_outputs=OUTPUTS_PER_TASK[task],
        lr=1e-3,
    )
    batch = batch_for(task)
    out = model.outputs(batch)
    assert out.shape == (16, OUTPUTS_PER_TASK[task]) and out.dtype == torch.float32
    hidden = model.backbone(model.inputs(batch))
    directions = 2 if backbone == "bilstm" else 1
    assert hidden.shape == (16, 5, 6 * directions)

    optimizer = model.configure_optimizers()
    loss = model.head.loss(out, batch, model.scaling)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert model.head.loss(model.outputs(batch), batch, model.scaling) < loss


def test_bidirectional_flag_doubles_width() -> None:
    model = RecurrentModel(backbone="gru", bidirectional=True, hidden_size=5, input_size=3, sequence_length=4)
    assert model.fc.in_features == 5 * 2 * 4


def test_tutorial_readout_sizes() -> None:
    """The tutorial's heads: Linear(5*8, 1) + Sigmoid for KOSPI, Linear(28*12*2, 10) for MNIST."""
    rnn = RecurrentModel(backbone="rnn", output_activation="sigmoid")
    assert (rnn.fc.in_features, rnn.fc.out_features) == (40, 1)
    assert isinstance(rnn.activation, torch.nn.Sigmoid)
    assert 0 < rnn(torch.randn(3, 5, 4)).min() and rnn(torch.randn(3, 5, 4)).max() < 1
    bilstm = RecurrentModel(
        backbone="bilstm", hidden_size=12, task="classification", input_size=28, sequence_length=28, num_outputs=10
    )
    assert (bilstm.fc.in_features, bilstm.fc.out_features) == (28 * 12 * 2, 10)


def test_zero_init_head_outputs_zero() -> None:
    model = RecurrentModel(zero_init_head=True)
    assert torch.count_nonzero(model(torch.randn(4, 5, 4))) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "transformer"}, "unknown backbone 'transformer'; choose one of rnn, lstm, gru, bilstm"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": -1}, "num_layers must be a positive integer"),
        ({"dropout": 1.0}, "dropout must lie in [0, 1)"),
        ({"readout": "mean"}, "unknown readout 'mean'"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        RecurrentModel(**kwargs)


def test_checkpoint_without_the_speedup_arguments_loads(tmp_path) -> None:
    """fused_adam, fast_hook_name and parallel_directions are speed-ups, not sizes: a checkpoint from before
    they were arguments loads with their defaults, and one with other values is not refused."""
    import lightning

    from rnn_lightning.speedups import MODEL_OFF

    model = RecurrentModel(hidden_size=4, num_layers=1)
    old = {k: v for k, v in model.hparams.items() if k not in MODEL_OFF}
    path = tmp_path / "old.ckpt"
    torch.save(
        {"pytorch-lightning_version": lightning.__version__, "state_dict": model.state_dict(), "hyper_parameters": old},
        path,
    )
    loaded = RecurrentModel.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.fused_adam is True and loaded.fast_hook_name is True
    assert loaded.backbone.parallel_directions is False
    model.check_checkpoint({"hyper_parameters": old})
    model.check_checkpoint({"hyper_parameters": {**model.hparams, **MODEL_OFF}})
    RecurrentModel(hidden_size=4, num_layers=1, **MODEL_OFF).check_checkpoint({"hyper_parameters": dict(model.hparams)})


def test_the_scaling_is_the_one_the_spec_names_and_old_specs_still_build() -> None:
    from rnn_lightning.models.scaling import PixelScaling, PriceScaling

    images = RecurrentModel(task="classification", head="classification", input_size=28, sequence_length=28,
                            num_outputs=10, scaling_spec={"type": "pixels"})  # fmt: skip
    assert isinstance(images.scaling, PixelScaling)
    # A checkpoint from before specs named their type: an image model had no spec.
    legacy = RecurrentModel(task="classification", head="classification", input_size=28, sequence_length=28,
                            num_outputs=10, scaling_spec=None)  # fmt: skip
    assert isinstance(legacy.scaling, PixelScaling)
    assert legacy.state_dict().keys() == images.state_dict().keys()
    prices = RecurrentModel(scaling_spec={"features": ["Open", "High", "Low", "Volume"]})
    assert isinstance(prices.scaling, PriceScaling) and prices.scaling.features == ["Open", "High", "Low", "Volume"]
