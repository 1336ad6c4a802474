"""An ensemble on a panel with gradient clipping: the members' weights are clipped per member, the shared
series inputs (the embedding table every member reads) as one group."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import only_version_dir
from test_panels import cli_args, make_panel, run_cli

from rnn_lightning.data.panel.module import PanelDataModule
from rnn_lightning.models.module import RecurrentModel


def test_members_with_a_series_embedding_train_with_gradient_clipping(tmp_path: Path) -> None:
    csv = tmp_path / "panel.csv"
    make_panel().to_csv(csv, index=False)
    run_cli("fit", *cli_args(csv, tmp_path / "runs", "--model.members", 2, "--trainer.gradient_clip_val", 0.01))
    assert (only_version_dir(tmp_path / "runs") / "checkpoints" / "last.ckpt").is_file()


def test_the_shared_series_inputs_are_clipped_as_one_group(tmp_path: Path) -> None:
    csv = tmp_path / "panel.csv"
    make_panel().to_csv(csv, index=False)
    dm = PanelDataModule(source=str(csv), horizon=6, input_length=12)
    dm.setup("fit")
    model = RecurrentModel(
        input_size=dm.input_size,
        sequence_length=dm.sequence_length,
        num_outputs=dm.num_outputs,
        scaling_spec=dm.scaling_spec,
        series_embedding=3,
        members=2,
        hidden_size=4,
        num_layers=1,
    )
    assert model.panel is not None
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    shared = list(model.panel.parameters())
    ids = {id(p) for p in shared}
    member_params = [p for p in model.parameters() if id(p) not in ids]
    model.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    total_shared = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in shared))
    assert abs(float(total_shared) - 1.0) < 1e-4  # torch's rule on the group: norm 1 after clipping
    per_member = torch.sqrt(sum((p.grad.double().reshape(2, -1) ** 2).sum(dim=1) for p in member_params))
    assert torch.allclose(per_member, torch.ones(2, dtype=torch.float64), atol=1e-4)  # each member's norm is 1
