"""``rnn-lightning export`` through the real CLI: every backbone, both tasks, both formats, and its errors.

Each (task, backbone) is fitted once per module (one tiny epoch); the exported file is then run on a batch
of 1 and of 1,000 and compared with the checkpoint's predictions through the project's predict path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, only_version_dir, run_cli, write_mnist_dir, write_price_csv

from rnn_lightning import __version__, export
from rnn_lightning.data.batches import Images, PriceWindows
from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.reports.common import predict_all

# TorchScript is deprecated in torch 2.14 but still the one format a C++/Java libtorch service loads.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
BACKBONES = ("rnn", "lstm", "gru", "bilstm")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
# lstm and bilstm forecast log returns against window-normalised inputs: the graph takes last_close too.
RELATIVE = {"lstm", "bilstm"}
KOSPI_DATA = ("--data.split", "50", "--data.val_size", "10")
MNIST_DATA = ("--data.download", "false", "--data.val_size", "20")


def kospi_args(csv: Path, root: Path, backbone: str) -> list:
    relative = ["--data.target_transform", "log_return", "--data.window_norm", "last_close"]
    return [
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        csv,
        *KOSPI_DATA,
        "--model.backbone",
        backbone,
        "--trainer.default_root_dir",
        root,
        "--plots.enabled",
        "false",
        *(relative if backbone in RELATIVE else []),
    ]


def mnist_args(data_dir: Path, root: Path, backbone: str) -> list:
    # The config's parallel_directions: true stays: export must trace nn.LSTM, not the two-thread path.
    return [
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.data_dir",
        data_dir,
        *MNIST_DATA,
        "--model.backbone",
        backbone,
        "--model.hidden_size",
        "6",
        "--model.num_layers",
        "1",
        "--trainer.default_root_dir",
        root,
        "--plots.enabled",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]


class Run:
    """A fitted tiny model: the CLI arguments that built it, its checkpoint and its data."""

    def __init__(self, task: str, backbone: str, base: Path) -> None:
        self.task, self.backbone, self.base = task, backbone, base
        if task == "kospi":
            self.data = write_price_csv(base / "prices.csv")
            self.args = kospi_args(self.data, base / "runs", backbone)
        else:
            self.data = write_mnist_dir(base / "mnist", n_train=100, n_test=30)
            self.args = mnist_args(self.data, base / "runs", backbone)
        run_cli("fit", *self.args, "--trainer.max_epochs", "1")
        self.ckpt = only_version_dir(base / "runs") / "checkpoints" / "last.ckpt"

    def export(self, fmt: str, path: Path, *extra: str) -> None:
        run_cli("export", *self.args, "--ckpt_path", self.ckpt, "--export.format", fmt, "--export.path", path, *extra)

    def test_batch(self) -> PriceWindows | Images:
        """The test split, raw, as the data module gives it."""
        if self.task == "kospi":
            relative = self.backbone in RELATIVE
            dm = DailyPricesDataModule(
                csv_path=str(self.data),
                split=50,
                val_size=10,
                target_transform="log_return" if relative else "level",
                window_norm="last_close" if relative else "none",
            )
            dm.setup("test")
            return dm.windows("test")
        dm = RowMNISTDataModule(dataset="mnist", data_dir=str(self.data), download=False, val_size=20)
        dm.setup("test")
        return Images(*dm.split_tensors("test"))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Run]:
    """``fitted(task, backbone)``: one fit per module and pair."""
    runs: dict[tuple[str, str], Run] = {}

    def get(task: str, backbone: str) -> Run:
        if (task, backbone) not in runs:
            runs[task, backbone] = Run(task, backbone, tmp_path_factory.mktemp(f"{task}-{backbone}"))
        return runs[task, backbone]

    return get


def read_metadata(path: Path, fmt: str) -> dict:
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props["rnn_lightning"])
    files = {"rnn_lightning.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["rnn_lightning.json"])


def run_file(path: Path, fmt: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The exported file's first output for named inputs (those the file does not take are ignored)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    names = [p["name"] for p in read_metadata(path, fmt)["inputs"]]
    with torch.no_grad():
        return torch.jit.load(str(path))(*(torch.from_numpy(inputs[n]) for n in names))[0].numpy()


def repeat(batch, n: int):
    """``n`` samples of ``batch``, cycling through it: a batch of any size from a small test split."""
    rows = torch.arange(n) % len(batch[0])
    return type(batch)(*(t.index_select(0, rows) for t in batch))


def check_against_checkpoint(run: Run, path: Path, fmt: str) -> tuple[float, float]:
    """Batches of 1 and 1,000 through the file and through the checkpoint's predict path; the worst diffs."""
    model = RecurrentModel.load_from_checkpoint(run.ckpt, map_location="cpu").eval()
    key = "prediction" if run.task == "kospi" else "probabilities"
    worst = (0.0, 0.0)
    for n in (1, 1000):
        batch = repeat(run.test_batch(), n)
        want = predict_all(model, batch)[key].numpy()
        if run.task == "kospi":
            inputs = {"windows": batch.x.numpy(), "last_close": batch.ref.numpy()}
        else:
            inputs = {"pixels": batch.x.numpy()}
        got = run_file(path, fmt, inputs)
        assert got.shape == want.shape == ((n,) if run.task == "kospi" else (n, 10))
        atol = export.ATOL_FRACTION * np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=export.RTOL, atol=atol)
        diff = np.abs(got.astype(np.float64) - want)
        worst = (max(worst[0], float(diff.max())), max(worst[1], float((diff / np.abs(want)).max())))
    return worst


@pytest.mark.parametrize(("task", "backbone"), [("kospi", "lstm"), ("mnist", "bilstm")])
def test_predict_gives_the_models_forecast(task: str, backbone: str, fitted) -> None:
    """``rnn-lightning predict``, ``predict_all`` and ``RecurrentModel.forecast`` are one forecast path."""
    import pandas as pd

    run = fitted(task, backbone)
    run_cli("predict", *run.args, "--ckpt_path", run.ckpt)
    table = pd.read_csv(max((run.base / "runs").rglob("predictions.csv"), key=lambda p: p.stat().st_mtime_ns))
    model = RecurrentModel.load_from_checkpoint(run.ckpt, map_location="cpu").eval()
    if task == "kospi":  # predict covers every window, then tomorrow's (lstm: relative target and windows)
        dm = DailyPricesDataModule(
            csv_path=str(run.data), split=50, val_size=10, target_transform="log_return", window_norm="last_close"
        )
        dm.setup("test")
        every, tomorrow = dm.windows(), dm.forecast_window()
        batch: PriceWindows | Images = PriceWindows(*(torch.cat([a, b]) for a, b in zip(every, tomorrow, strict=True)))
    else:
        batch = run.test_batch()
    with torch.no_grad():
        rows = model.forecast(batch)
    for key, value in predict_all(model, batch).items():
        torch.testing.assert_close(value, rows[key], rtol=0, atol=0, equal_nan=True, msg=key)  # bit for bit
    if task == "kospi":
        assert len(table) == len(batch.x)
        np.testing.assert_allclose(table["predicted_close"], rows["prediction"].numpy(), rtol=0, atol=5e-7)
    else:
        np.testing.assert_array_equal(table["predicted"], rows["prediction"].numpy())
        probabilities = table[[f"p{k}" for k in range(10)]].to_numpy()
        np.testing.assert_allclose(probabilities, rows["probabilities"].numpy(), rtol=0, atol=5e-7)  # 6 decimals


def export_cases() -> list:
    quick = {("kospi", "gru", "torchscript"), ("mnist", "bilstm", "torchscript")}
    cases = []
    for task in ("kospi", "mnist"):
        for backbone in BACKBONES:
            for fmt in ("torchscript", "onnx"):
                marks = [] if (task, backbone, fmt) in quick else [pytest.mark.slow]
                cases.append(pytest.param(task, backbone, fmt, marks=marks, id=f"{task}-{backbone}-{fmt}"))
    return cases


@pytest.mark.parametrize(("task", "backbone", "fmt"), export_cases())
def test_export_matches_checkpoint(
    task: str, backbone: str, fmt: str, fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    run = fitted(task, backbone)
    path = tmp_path / f"model.{fmt}"
    run.export(fmt, path)
    assert "matches the checkpoint's predictions" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # one file: no .data, no temporary left
    worst = check_against_checkpoint(run, path, fmt)
    print(f"{task}-{backbone}-{fmt}: max abs {worst[0]:.3g}, max rel {worst[1]:.3g}")

    meta = read_metadata(path, fmt)
    assert meta["rnn_lightning_version"] == __version__ and meta["format"] == fmt
    assert meta["model"]["backbone"] == backbone
    if task == "kospi":
        names = ["windows", "last_close"] if backbone in RELATIVE else ["windows"]
        assert [p["name"] for p in meta["inputs"]] == names
        assert meta["inputs"][0]["shape"] == ["batch", 5, 4] and meta["inputs"][0]["dtype"] == "float64"
        assert meta["outputs"] == [
            {
                "name": "prediction",
                "dtype": "float64",
                "shape": ["batch"],
                "description": meta["outputs"][0]["description"],
            }
        ]
        assert meta["data"]["features"] == ["Open", "High", "Low", "Volume"]
        assert meta["data"]["sequence_length"] == 5 and meta["data"]["target"] == "Close"
        assert meta["data"]["target_transform"] == ("log_return" if backbone in RELATIVE else "level")
    else:
        assert [(p["name"], p["dtype"], p["shape"]) for p in meta["inputs"]] == [("pixels", "uint8", ["batch", 28, 28])]
        assert [(p["name"], p["shape"]) for p in meta["outputs"]] == [("probabilities", ["batch", 10])]


# --- errors: one line, exit status 2, no file ------------------------------------------------------------


def fails(run: Run, capsys: pytest.CaptureFixture[str], *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("export", *run.args, *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnn-lightning: error: "), err
    return err[0]


def test_needs_a_checkpoint(fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(fitted("kospi", "gru"), capsys, "--export.format", "torchscript", "--export.path", tmp_path / "m.pt")
    assert "--ckpt_path" in err
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint(fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted("kospi", "gru")
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(run.ckpt.read_bytes()[:1000])
    out = tmp_path / "out"
    out.mkdir()
    err = fails(run, capsys, "--ckpt_path", torn, "--export.format", "torchscript", "--export.path", out / "m.pt")
    assert "cannot be read" in err
    assert list(out.iterdir()) == []


def test_mismatched_checkpoint(fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted("kospi", "gru")
    err = fails(
        run,
        capsys,
        "--ckpt_path",
        run.ckpt,
        "--model.hidden_size",
        "5",
        "--export.format",
        "torchscript",
        "--export.path",
        tmp_path / "m.pt",
    )
    assert "hidden_size" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted("kospi", "gru")
    err = fails(run, capsys, "--ckpt_path", run.ckpt, "--export.format", "tflite", "--export.path", tmp_path / "m")
    assert "export.format" in err and "tflite" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted("kospi", "gru")
    target = tmp_path / "no" / "such" / "m.pt"
    err = fails(run, capsys, "--ckpt_path", run.ckpt, "--export.format", "torchscript", "--export.path", target)
    assert str(target.parent) in err and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_names_it(
    fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fitted("kospi", "gru")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    err = fails(run, capsys, "--ckpt_path", run.ckpt, "--export.format", "onnx", "--export.path", tmp_path / "m.onnx")
    assert "pip install -e '.[export]'" in err
    assert list(tmp_path.iterdir()) == []


def test_disagreeing_file_is_not_kept(
    fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that fails the check leaves nothing behind, and an earlier file at the path stays as it was."""
    run = fitted("kospi", "gru")
    target = tmp_path / "m.pt"
    target.write_bytes(b"an earlier export")
    load_runner = export.load_runner

    def off_by_one_percent(path: Path, fmt: str):  # a file whose outputs are 1% off
        run_file = load_runner(path, fmt)
        return lambda *inputs: [out * 1.01 for out in run_file(*inputs)]

    monkeypatch.setattr(export, "load_runner", off_by_one_percent)
    err = fails(run, capsys, "--ckpt_path", run.ckpt, "--export.format", "torchscript", "--export.path", target)
    assert "disagrees with the checkpoint" in err and "no file written" in err
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"] and target.read_bytes() == b"an earlier export"


# --- docs/export.md's example ----------------------------------------------------------------------------


def docs_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks, "docs/export.md has no python block"
    return blocks[0]


def test_docs_example_is_ten_lines_without_rnn_lightning() -> None:
    code = docs_example()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 12 and "rnn_lightning" not in code.replace('"rnn_lightning"', "")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["gru", "lstm"])  # without and with the last_close input
def test_docs_example_forecasts_what_predict_does(backbone: str, fitted, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import pandas as pd

    run = fitted("kospi", backbone)
    path = tmp_path / "model.onnx"
    run.export("onnx", path)
    run_cli("predict", *run.args, "--ckpt_path", run.ckpt)
    table = pd.read_csv(sorted((run.base / "runs" / "lightning_logs").glob("version_*"))[-1] / "predictions.csv")
    expected = float(table.loc[table["split"] == "forecast", "predicted_close"].iloc[0])

    script = tmp_path / "forecast.py"
    script.write_text(docs_example())
    # The venv has rnn_lightning installed: the run itself checks that the example never imported it.
    runner = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert not any(m.startswith('rnn_lightning') for m in sys.modules), 'imported rnn_lightning'"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", runner, script, path, run.data],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    printed = float(re.findall(r"[-+]?\d+\.\d+", done.stdout)[-1])
    assert printed == pytest.approx(expected, rel=export.RTOL, abs=1e-5)  # predictions.csv: 6 decimals


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_quantile_head_with_a_horizon_exports_every_quantile(fmt: str, tmp_path: Path) -> None:
    """A (B, H, Q) head: the file returns the median path (B, H) and the quantiles (B, H, Q) in prices,
    equal to what the checkpoint's predict path gives."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    csv = write_price_csv(tmp_path / "prices.csv")
    args = [
        "--config",
        CONFIGS / "kospi_gru_quantile.yaml",
        "--data.csv_path",
        csv,
        *KOSPI_DATA,
        "--data.horizon",
        "2",
        "--trainer.default_root_dir",
        tmp_path / "runs",
        "--plots.enabled",
        "false",
    ]
    run_cli("fit", *args, "--trainer.max_epochs", "1")
    ckpt = only_version_dir(tmp_path / "runs") / "checkpoints" / "last.ckpt"
    path = tmp_path / f"quantile.{fmt}"
    run_cli("export", *args, "--ckpt_path", ckpt, "--export.format", fmt, "--export.path", path)
    model = RecurrentModel.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = DailyPricesDataModule(
        csv_path=str(csv), split=50, val_size=10, features=["LogReturn"], target_transform="log_return", horizon=2
    )
    dm.setup("test")
    batch = dm.windows("test")
    want = predict_all(model, batch)
    inputs = {"windows": batch.x.numpy(), "last_close": batch.ref.numpy()}
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
    else:
        with torch.no_grad():
            got = [t.numpy() for t in torch.jit.load(str(path))(*(torch.from_numpy(v) for v in inputs.values()))]
    assert got[0].shape == (len(batch.x), 2) and got[1].shape == (len(batch.x), 2, 3)
    for value, key in zip(got, ("prediction", "quantiles"), strict=True):
        np.testing.assert_allclose(
            value, want[key].numpy(), rtol=export.RTOL, atol=export.ATOL_FRACTION * want[key].abs().max().item()
        )
