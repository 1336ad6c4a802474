"""Every speed-up of rnn_lightning/speedups.py is still in effect on the installed Lightning and torch, and
``--speedups false`` turns all of them off. A release that breaks one fails here instead of silently
losing it (the progress bar once stopped being paced as soon as any callback was given).

The CLI's speed-ups are checked through ``rnn_lightning.cli.main`` (the real entry point, in-process); the
model's are RecurrentModel arguments, checked on a model or a plain Trainer."""

from __future__ import annotations

import ctypes.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from helpers import CONFIGS, run_cli
from lightning.pytorch.callbacks import TQDMProgressBar

from rnn_lightning import UserInputError, speedups
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.models import parallel
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.speedups import PacedProgressBar


def fit_through_main(
    kospi_csv: Path, root: Path, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[RecurrentModel, pl.Trainer]:
    """One short ``rnn-lightning fit`` in-process; the model and Trainer it ran, caught at ``on_fit_start``."""
    seen: list[tuple[RecurrentModel, pl.Trainer]] = []
    monkeypatch.setattr(RecurrentModel, "on_fit_start", lambda self: seen.append((self, self.trainer)))
    run_cli(
        "fit",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        "--trainer.default_root_dir",
        root,
        "--trainer.max_epochs",
        "1",
        # The KOSPI configs turn the bar off (epochs of ~25 ms); turned back on here.
        "--trainer.enable_progress_bar",
        "true",
        *extra,
    )
    assert len(seen) == 1
    return seen[0]


def saved_model_config(root: Path) -> dict:
    """The ``model`` block of the config.yaml the run saved (wherever under ``root`` the run folder is)."""
    found = sorted(root.rglob("config.yaml"))
    assert len(found) == 1, found
    return yaml.safe_load(found[0].read_text())["model"]


# --- allocator ------------------------------------------------------------------------------------------
# A bare interpreter each time: the setting is process-wide, and glibc adjusts its thresholds as a process
# frees memory, so only a fresh process shows the starting behaviour.
STEPS = textwrap.dedent(
    """
    import ctypes, sys
    from rnn_lightning import speedups
    took = speedups.keep_freed_memory() if sys.argv[1] == "keep" else None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = Mallinfo2
    size = 16 << 20  # an activation-sized block
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    print(took, libc.mallinfo2().fordblks >= size)  # is the freed block still held by the process?
    """
)

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so.6" not in (ctypes.util.find_library("c") or ""),
    reason="glibc's malloc",
)


def run_steps(mode: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    )
    return done.stdout.split()


@glibc
def test_allocator_keeps_a_freed_block_with_the_process() -> None:
    assert run_steps("default") == ["None", "False"]  # glibc's default: unmapped, faulted in again next time
    assert run_steps("keep") == ["True", "True"]


@glibc
def test_allocator_leaves_the_users_malloc_environment_alone() -> None:
    assert run_steps("keep", MALLOC_MMAP_THRESHOLD_="131072") == ["False", "False"]


# --- nvml_check -----------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is only dropped where there is no CUDA")
def test_nvml_check_lightning_still_sets_it_and_it_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(speedups.NVML_ENV, raising=False)
    found = subprocess.run(
        [sys.executable, "-c", f"import os, lightning.pytorch; print(os.environ.get('{speedups.NVML_ENV}'))"],
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == "1"  # still Lightning's setting: the tweak still has work to do
    monkeypatch.setenv(speedups.NVML_ENV, "1")
    assert speedups.apply_process(False)["nvml_check"] is False
    assert os.environ[speedups.NVML_ENV] == "1"  # switched off: left alone
    assert speedups.apply_process(True)["nvml_check"] is True
    assert speedups.NVML_ENV not in os.environ


# --- paced_progress_bar ---------------------------------------------------------------------------------


def test_default_bar_is_paced_also_with_other_callbacks(
    kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, extra in enumerate(([], ["--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor"])):
        _, trainer = fit_through_main(kospi_csv, tmp_path / str(i), monkeypatch, *extra)
        bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
        assert len(bars) == 1 and type(bars[0]) is PacedProgressBar, extra
        assert bars[0].min_interval == 0.1


def test_configured_bar_and_disabled_bar_are_kept(
    kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trainer = fit_through_main(
        kospi_csv,
        tmp_path / "configured",
        monkeypatch,
        "--trainer.callbacks+=TQDMProgressBar",
        "--trainer.callbacks.refresh_rate=7",
    )
    bar = trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 7
    _, trainer = fit_through_main(kospi_csv, tmp_path / "off", monkeypatch, "--trainer.enable_progress_bar", "false")
    assert trainer.progress_bar_callback is None


def test_pace_progress_bar_takes_its_switch_as_an_argument(tmp_path: Path) -> None:
    for enabled in (False, True):
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
        assert speedups.pace_progress_bar(trainer, [], enabled) is enabled
        assert type(trainer.progress_bar_callback) is (PacedProgressBar if enabled else TQDMProgressBar)


def drawn_counts(output: str, total: int) -> list[int]:
    """The batch counts the training bar showed, in order (``Epoch 0:  40%|...| 4/10 ...``)."""
    return [int(n) for n in re.findall(rf"Epoch 0:[^|]*\|[^|]*\| (\d+)/{total}\b", output)]


@pytest.mark.parametrize(("min_interval", "expect_every_batch"), [(0.0, True), (3600.0, False)])
def test_bar_redraws_by_the_clock_and_always_ends_full(
    kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture, min_interval: float, expect_every_batch: bool
) -> None:
    data = DailyPricesDataModule(csv_path=str(kospi_csv), batch_size=4, split=60, val_size=0)  # 15 batches
    model = RecurrentModel(hidden_size=4, num_layers=1)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[PacedProgressBar(min_interval=min_interval)],
    )
    trainer.fit(model, data)
    total = trainer.num_training_batches
    assert total >= 10
    counts = sorted({n for n in drawn_counts(capsys.readouterr().out, total) if n})  # 0: the bar opening
    assert counts[-1] == total  # the last batch is always drawn
    if expect_every_batch:
        assert counts == list(range(1, total + 1))
    else:
        # Within one hour: the first batch (the clock starts unset) and the last one only.
        assert counts == [1, total]


def test_negative_interval_is_refused(kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserInputError, match="min_interval must be >= 0 seconds, got -1"):
        PacedProgressBar(min_interval=-1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            CONFIGS / "kospi_gru.yaml",
            "--data.csv_path",
            kospi_csv,
            "--trainer.default_root_dir",
            tmp_path,
            "--trainer.enable_progress_bar",
            "true",
            "--trainer.callbacks+=rnn_lightning.speedups.PacedProgressBar",
            "--trainer.callbacks.min_interval=-1",
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rnn-lightning: error: progress bar min_interval must be >= 0 seconds, got -1.0"]


# --- fast_hook_name, fused_adam, parallel_directions: RecurrentModel arguments --------------------------


def fit_counting_hook_names(
    kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **model_args: bool
) -> tuple[int, int]:
    """(times Lightning set ``_current_fx_name`` on the model, of them through nn.Module.__setattr__)."""
    seen = {"set": 0, "slow": 0}
    module_setattr = torch.nn.Module.__setattr__
    fast_setattr = speedups.FastHookName.__setattr__

    def counting_fast(self, name, value):
        if name == speedups.HOOK_NAME:
            seen["set"] += 1
        fast_setattr(self, name, value)

    def counting_slow(self, name, value):
        if name == speedups.HOOK_NAME:
            seen["slow"] += 1
        module_setattr(self, name, value)

    monkeypatch.setattr(speedups.FastHookName, "__setattr__", counting_fast)
    monkeypatch.setattr(torch.nn.Module, "__setattr__", counting_slow)
    data = DailyPricesDataModule(csv_path=str(kospi_csv), batch_size=10, split=40, val_size=0)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(RecurrentModel(hidden_size=4, num_layers=1, **model_args), data)
    return seen["set"], seen["slow"]


def test_hook_names_skip_module_setattr_and_lightning_still_sets_them(
    kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert RecurrentModel.__mro__.index(speedups.FastHookName) < RecurrentModel.__mro__.index(torch.nn.Module)
    set_count, slow = fit_counting_hook_names(kospi_csv, tmp_path, monkeypatch)
    assert set_count > 40 and slow == 0  # 4 steps, ~50 hook names each
    monkeypatch.undo()  # a fresh count: the helper patches again
    set_count, slow = fit_counting_hook_names(kospi_csv, tmp_path, monkeypatch, fast_hook_name=False)
    assert slow == set_count > 40


def test_adam_is_fused_on_the_cpu_unless_switched_off() -> None:
    model = RecurrentModel(hidden_size=4, num_layers=1)
    assert model.hparams.fused_adam is True
    assert model.configure_optimizers().defaults["fused"] is True
    model = RecurrentModel(hidden_size=4, num_layers=1, fused_adam=False)
    assert model.configure_optimizers().defaults["fused"] is None  # torch's default
    assert speedups.adam_fused(torch.device("meta"), True) is None  # no fused kernel there


def test_parallel_directions_stand_aside_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(
        "rnn_lightning.models.backbones.bidirectional_forward",
        lambda rnn, x: calls.append(1) or parallel.bidirectional_forward(rnn, x),
    )
    model = RecurrentModel(
        backbone="bilstm",
        hidden_size=4,
        num_layers=1,
        parallel_directions=True,
        task="classification",
        input_size=28,
        sequence_length=28,
        num_outputs=10,
    )
    x = torch.rand(2, 28, 28)
    model(x)
    assert calls == [1]
    model.backbone.parallel_directions = False  # what export does to the model it traces
    model(x)
    assert calls == [1]
    RecurrentModel(backbone="bilstm", hidden_size=4, num_layers=1, input_size=28, sequence_length=28)(x)
    assert calls == [1]  # off unless asked for


# --- the one switch -------------------------------------------------------------------------------------


def test_switch_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(speedups.ENV_SWITCH, raising=False)
    assert speedups.switch_allowed() is True and speedups.switch_allowed(True) is True
    assert speedups.switch_allowed(False) is False
    assert speedups.apply_process(False) == {"allocator": False, "nvml_check": False}
    for off in ("0", "false", "No", " off "):
        monkeypatch.setenv(speedups.ENV_SWITCH, off)
        assert speedups.switch_allowed(True) is False  # the environment variable turns them off as well
    monkeypatch.setenv(speedups.ENV_SWITCH, "1")
    assert speedups.switch_allowed(True) is True
    # What --speedups false writes into model.*: every model speed-up, each a RecurrentModel argument.
    assert speedups.MODEL_OFF == {"fused_adam": False, "fast_hook_name": False, "parallel_directions": False}
    model = RecurrentModel(**speedups.MODEL_OFF)
    assert model.configure_optimizers().defaults["fused"] is None
    assert not model.fast_hook_name and not model.backbone.parallel_directions


def test_every_speedup_is_on_through_main_by_default(
    kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, trainer = fit_through_main(kospi_csv, tmp_path, monkeypatch)
    assert type(trainer.progress_bar_callback) is PacedProgressBar
    assert model.fast_hook_name is True
    assert trainer.optimizers[0].defaults["fused"] is True
    saved = saved_model_config(tmp_path)  # --print_config and config.yaml show the model's speed-ups
    assert saved["fused_adam"] is True and saved["fast_hook_name"] is True
    assert saved["parallel_directions"] is False  # a model option, off in the KOSPI configs


def test_one_switch_turns_them_all_off(kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, trainer = fit_through_main(kospi_csv, tmp_path, monkeypatch, "--speedups", "false")
    assert saved_model_config(tmp_path) | speedups.MODEL_OFF == saved_model_config(tmp_path)
    assert not model.hparams.fused_adam and not model.fast_hook_name and not model.backbone.parallel_directions
    assert trainer.optimizers[0].defaults["fused"] is None
    assert type(trainer.progress_bar_callback) is TQDMProgressBar
