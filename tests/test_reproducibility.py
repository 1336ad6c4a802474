"""On CPU, the same config and seed give bit-identical weights and test metrics; another seed does not.

Shuffling, dropout between stacked layers, weight initialisation and the validation split all draw from
the seeded generators, so two runs of the configs as shipped (no ``--trainer.deterministic``) must agree
exactly (``==``, not approximately).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, run_cli, scalars, write_mnist_dir, write_price_csv


def read_test_metrics(run_dir: Path) -> dict[str, float]:
    return {tag: values[-1] for tag, values in scalars(run_dir).items() if tag.startswith("test_")}


def fit_and_test(root: Path, data: list[object], config: Path, seed: int) -> tuple[dict, dict[str, float]]:
    """Fit two epochs, then test from last.ckpt; the final weights and the test metrics."""
    common = [
        "--config",
        config,
        *data,
        "--trainer.default_root_dir",
        root,
        "--seed_everything",
        seed,
        "--plots.enabled",
        "false",
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "2", "--model.dropout", "0.3", "--model.hidden_size", "6")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    run_cli("test", *common, "--model.dropout", "0.3", "--model.hidden_size", "6", "--ckpt_path", ckpt)
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return weights, read_test_metrics(root / "lightning_logs" / "version_1")


def kospi_data(tmp_path: Path) -> tuple[Path, list[object]]:
    csv = write_price_csv(tmp_path / "prices.csv", rows=120)
    return CONFIGS / "kospi_lstm.yaml", [
        "--data.csv_path",
        csv,
        "--data.split",
        "80",
        "--data.val_size",
        "10",
        "--data.batch_size",
        "8",
    ]


def mnist_data(tmp_path: Path) -> tuple[Path, list[object]]:
    root = write_mnist_dir(tmp_path / "mnist", n_train=120, n_test=40)
    return CONFIGS / "mnist_bilstm.yaml", [
        "--data.data_dir",
        root,
        "--data.download",
        "false",
        "--data.val_size",
        "20",
        "--data.batch_size",
        "32",
    ]


@pytest.mark.parametrize("make_data", [kospi_data, mnist_data], ids=["kospi", "mnist"])
def test_same_seed_same_numbers(make_data, tmp_path: Path) -> None:
    config, data = make_data(tmp_path)
    weights_a, metrics_a = fit_and_test(tmp_path / "a", data, config, seed=7)
    weights_b, metrics_b = fit_and_test(tmp_path / "b", data, config, seed=7)
    assert metrics_a and metrics_a == metrics_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    weights_c, metrics_c = fit_and_test(tmp_path / "c", data, config, seed=8)
    assert metrics_c != metrics_a
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
