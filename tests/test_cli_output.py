"""What a user sees: the README's commands print no warning they cannot act on, and --help says what this is."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from helpers import CONFIGS, only_version_dir, run_cli, write_price_csv

from rnn_lightning.cli import DESCRIPTION


def test_help_says_what_the_command_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert DESCRIPTION.split(":")[0] in out and "Lightning Trainer command line tool" not in out
    assert "backtest" in out and "export" in out


def test_test_from_last_ckpt_warns_about_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The README's second command: ``test --ckpt_path .../last.ckpt`` after a fit, in a new run folder.

    Lightning used to warn that the checkpoint callbacks' folder changed and that they should be passed
    again: nothing a user can act on. No filter hides it; evaluation simply loads the weights only.
    """
    csv = write_price_csv(tmp_path / "prices.csv", rows=80)
    common = [
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        csv,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--trainer.max_epochs",
        "2",
        "--trainer.default_root_dir",
        tmp_path,
    ]
    run_cli("fit", *common)
    last = only_version_dir(tmp_path) / "checkpoints" / "last.ckpt"
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("test", *common, "--ckpt_path", last)
    shown = [str(w.message) for w in caught]
    err = capfd.readouterr().err
    for text in ("dirpath has changed", "callbacks used to create the checkpoint", "does not have many workers"):
        assert not any(text in message for message in shown), shown
        assert text not in err
    # The filters of the run stay inside it: the process's own warning filters are as they were.
    assert not any("does not have many workers" in str(f[1]) for f in warnings.filters if f[1] is not None)
