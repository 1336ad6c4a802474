"""``--data.cache_dir`` and ``--data.cache`` through the CLI: a long panel file read through its cache.

A fit builds the cache entry; a second fit on the unchanged file opens the same files (nothing
rewritten); a changed file rebuilds the entry and the fit uses the new values (its per-series scaling,
in the checkpoint, follows them). ``--data.cache false`` leaves no cache behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_panels import best_checkpoint, cli_args, make_panel, run_cli

from rnn_lightning.data.panel.cache import cache_location
from rnn_lightning.data.panel.module import PanelDataModule


def entry_state(entry: Path) -> dict[str, int]:
    """Every file of a cache entry and its mtime_ns."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(entry.iterdir())}


def fitted_loc(root: Path) -> np.ndarray:
    """The per-series scaling ``loc`` the fit's best checkpoint carries."""
    state = torch.load(best_checkpoint(root), map_location="cpu", weights_only=False)["state_dict"]
    return state["scaling.loc"].numpy()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_fit_builds_then_reuses_then_rebuilds_the_cache(tmp_path: Path, suffix: str) -> None:
    frame = make_panel()
    path = tmp_path / f"panel{suffix}"
    write = (lambda f: f.to_csv(path, index=False)) if suffix == ".csv" else (lambda f: f.to_parquet(path))
    write(frame)
    cache_dir = tmp_path / "shared" / "cache"
    extra = ("--data.cache_dir", cache_dir, "--trainer.max_epochs", 1, "--plots.enabled", "false")

    run_cli("fit", *cli_args(path, tmp_path / "fit1", *extra))
    entry = cache_location(path, cache_dir)
    assert (entry / "meta.json").is_file() and (entry / "values.npy").is_file()
    assert not (tmp_path / ".rnn_lightning_cache").exists()  # the cache went to cache_dir, not beside the file
    built = entry_state(entry)
    build_id = json.loads((entry / "meta.json").read_text())["build"]

    run_cli("fit", *cli_args(path, tmp_path / "fit2", *extra))
    assert entry_state(entry) == built  # reused: not one file rewritten
    assert json.loads((entry / "meta.json").read_text())["build"] == build_id
    np.testing.assert_allclose(fitted_loc(tmp_path / "fit2"), fitted_loc(tmp_path / "fit1"))

    changed = frame.assign(y=frame["y"] * 3.0)
    write(changed)
    run_cli("fit", *cli_args(path, tmp_path / "fit3", *extra))
    assert json.loads((entry / "meta.json").read_text())["build"] != build_id  # rebuilt
    dm = PanelDataModule(source=str(path), horizon=6, input_length=12, cache_dir=str(cache_dir))
    assert isinstance(dm.panel.values, np.memmap)
    want = changed.sort_values(["unique_id", "ds"])["y"].to_numpy(np.float32)
    np.testing.assert_array_equal(np.asarray(dm.panel.values), want)
    # The third fit trained on the new values: its series' levels are three times the first fit's.
    np.testing.assert_allclose(fitted_loc(tmp_path / "fit3"), 3.0 * fitted_loc(tmp_path / "fit1"), rtol=1e-5)


def test_cache_false_reads_the_file_whole_and_leaves_no_cache(tmp_path: Path) -> None:
    path = tmp_path / "panel.csv"
    make_panel().to_csv(path, index=False)
    dm = PanelDataModule(source=str(path), horizon=6, input_length=12, cache=False)
    assert not isinstance(dm.panel.values, np.memmap)
    run_cli("fit", *cli_args(path, tmp_path / "fit", "--data.cache", "false", "--trainer.max_epochs", 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit", "panel.csv"]
    default = PanelDataModule(source=str(path), horizon=6, input_length=12)
    assert isinstance(default.panel.values, np.memmap)
    assert (tmp_path / ".rnn_lightning_cache").is_dir()  # the default folder, beside the input
    want = pd.read_csv(path).sort_values(["unique_id", "ds"])["y"].to_numpy(np.float32)
    np.testing.assert_array_equal(np.asarray(default.panel.values), want)
