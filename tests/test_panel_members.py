"""An ensemble on a panel: each member reads its own series embedding table, built as its solo model's; the
members' weights (tables included) are clipped per member; an ensemble saved with one shared table loads."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from helpers import only_version_dir
from test_panels import cli_args, make_panel, run_cli

from rnn_lightning.data.panel.module import PanelDataModule
from rnn_lightning.models.module import EMBEDDING_KEY, RecurrentModel
from rnn_lightning.models.panel import MemberEmbedding


def panel_module(tmp_path: Path) -> PanelDataModule:
    csv = tmp_path / "panel.csv"
    make_panel().to_csv(csv, index=False)
    dm = PanelDataModule(source=str(csv), horizon=6, input_length=12)
    dm.setup("fit")
    return dm


def model_of(dm: PanelDataModule, members: int, seed: int = 3) -> RecurrentModel:
    pl.seed_everything(seed, verbose=False)
    return RecurrentModel(
        input_size=dm.input_size,
        sequence_length=dm.sequence_length,
        num_outputs=dm.num_outputs,
        scaling_spec=dm.scaling_spec,
        series_embedding=3,
        members=members,
        hidden_size=4,
        num_layers=1,
    )


def test_members_with_a_series_embedding_train_with_gradient_clipping(tmp_path: Path) -> None:
    csv = tmp_path / "panel.csv"
    make_panel().to_csv(csv, index=False)
    run_cli("fit", *cli_args(csv, tmp_path / "runs", "--model.members", 2, "--trainer.gradient_clip_val", 0.01))
    assert (only_version_dir(tmp_path / "runs") / "checkpoints" / "last.ckpt").is_file()


def test_each_member_has_its_own_table_and_member_0_starts_as_the_solo_model(tmp_path: Path) -> None:
    dm = panel_module(tmp_path)
    solo, ensemble = model_of(dm, 1), model_of(dm, 3)
    assert solo.panel is not None and ensemble.panel is not None
    tables = ensemble.panel.embedding
    assert isinstance(tables, MemberEmbedding)
    assert tables.weight.shape == (3, dm.n_series, 3)
    assert not torch.equal(tables.weight[0], tables.weight[1])  # drawn apart, not one table copied
    assert torch.equal(tables.weight[0], solo.panel.embedding.weight)  # type: ignore[union-attr]
    assert torch.equal(ensemble.fc.weight[0], solo.fc.weight)  # the rest of member 0 is the solo model's too
    # Member 0's forecast is the solo model's: the same inputs reach its recurrence.
    batch = next(iter(dm.train_dataloader()))
    solo.eval(), ensemble.eval()
    with torch.no_grad():
        assert torch.allclose(ensemble.outputs(batch)[0], solo.outputs(batch), atol=1e-5)


def test_every_parameter_is_clipped_per_member(tmp_path: Path) -> None:
    model = model_of(panel_module(tmp_path), 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    model.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert model.panel is not None and model.panel.embedding is not None
    assert all(g is not None for g in (p.grad for p in model.panel.parameters()))
    per_member = torch.sqrt(sum((p.grad.double().reshape(2, -1) ** 2).sum(dim=1) for p in model.parameters()))
    assert torch.allclose(per_member, torch.ones(2, dtype=torch.float64), atol=1e-4)  # each member's norm is 1


def test_an_ensemble_saved_with_one_shared_table_loads_and_forecasts_the_same(tmp_path: Path) -> None:
    dm = panel_module(tmp_path)
    model = model_of(dm, 2)
    assert model.panel is not None and model.panel.embedding is not None
    with torch.no_grad():  # as the shared table was: every member reads the same values
        model.panel.embedding.weight[1] = model.panel.embedding.weight[0]
    state = model.state_dict()
    state[EMBEDDING_KEY] = state[EMBEDDING_KEY][0].clone()  # (n_series, E): the old layout
    checkpoint = {"state_dict": state, "hyper_parameters": dict(model.hparams)}
    restored = model_of(dm, 2, seed=9)
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])
    batch = next(iter(dm.train_dataloader()))
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(restored.outputs(batch), model.outputs(batch))
