"""Every bad input a new user can hand ``rnn-lightning`` ends in one line naming the problem and exit 2.

The in-process tests drive the real ``main()``; the subprocess tests run the installed console script, as
a user would, and check what the terminal shows: one ``rnn-lightning: error:`` line and no traceback.
Every test also checks that the input files are byte for byte unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CONFIGS, make_price_frame, run_cli, write_mnist_dir

from rnn_lightning.errors import UserInputError

KOSPI_CONFIG = CONFIGS / "kospi_gru.yaml"
MNIST_CONFIG = CONFIGS / "mnist_bilstm.yaml"
ERROR_PREFIX = "rnn-lightning: error: "
# A real PNG signature and header chunk: what a user gets by passing a chart instead of the CSV.
PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000010000000100806000000") + bytes(range(256))


def digest(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file under ``paths``, to prove a failed run left its inputs alone."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def run_folders(args: tuple[object, ...]) -> set[Path]:
    """Every file and folder under the run root (``--trainer.default_root_dir``, else the working dir)."""
    values = [str(a) for a in args]
    index = values.index("--trainer.default_root_dir") + 1 if "--trainer.default_root_dir" in values else None
    logs = Path(values[index] if index is not None else ".") / "lightning_logs"
    return set(logs.rglob("*")) if logs.is_dir() else set()


def expect_error(capsys: pytest.CaptureFixture[str], *args: object, inputs: list[Path], match: str) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one error line matching ``match``, leave its
    inputs byte for byte as they were, and leave ``lightning_logs/`` as it was (no empty version_N)."""
    before = digest(inputs)
    logs_before = run_folders(args)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    assert run_folders(args) == logs_before
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    assert digest(inputs) == before
    return lines[0]


def kospi_fit(csv: Path | str, root: Path, *extra: object) -> list[object]:
    return [
        "fit",
        "--config",
        KOSPI_CONFIG,
        "--data.csv_path",
        csv,
        "--trainer.default_root_dir",
        root,
        "--trainer.max_epochs",
        "1",
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        *extra,
    ]


# --- CSV files -----------------------------------------------------------------------------------------


def _drop_volume(path: Path) -> None:
    make_price_frame().drop(columns="Volume").to_csv(path, index=False)


def _rename_close(path: Path) -> None:
    make_price_frame().rename(columns={"Close": "Price"}).to_csv(path, index=False)


def _text_cell(path: Path) -> None:
    frame = make_price_frame()
    frame["High"] = frame["High"].astype(str)
    frame.loc[10, "High"] = "12,5O"  # line 12 in an editor: header is line 1, row 0 is line 2
    frame.to_csv(path, index=False)


def _partial_null(path: Path) -> None:
    frame = make_price_frame().astype({"Low": str})
    frame.loc[3, "Low"] = "null"  # one missing value is not a Yahoo null row: it is not silently dropped
    frame.to_csv(path, index=False)


def _bad_date(path: Path) -> None:
    frame = make_price_frame()
    frame.loc[7, "Date"] = "yesterday"
    frame.to_csv(path, index=False)


def _all_null(path: Path) -> None:
    frame = make_price_frame(rows=6).astype(str)
    frame.loc[:, "Open":] = "null"
    frame.to_csv(path, index=False)


CSV_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing-column": (_drop_volume, r"prices\.csv: missing column\(s\) Volume; found Date, Open"),
    "renamed-column": (_rename_close, r"prices\.csv: missing column\(s\) Close;"),
    "non-numeric-cell": (_text_cell, r"prices\.csv: line 12, column High: '12,5O' is not a number"),
    "one-null-cell": (_partial_null, r"prices\.csv: line 5, column Low: 'null' is not a number"),
    "bad-date": (_bad_date, r"prices\.csv: line 9, column Date: 'yesterday' is not a date"),
    "only-null-rows": (_all_null, r"prices\.csv: every row is empty"),
    "empty-file": (lambda p: p.write_bytes(b""), r"prices\.csv: the file is empty"),
    "header-only": (
        lambda p: p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"),
        r"prices\.csv: no data rows",
    ),
    "binary-garbage": (lambda p: p.write_bytes(bytes(range(256)) * 8), r"prices\.csv: not a readable CSV"),
    "png-image": (lambda p: p.write_bytes(PNG_BYTES), r"prices\.csv: not a readable CSV"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_bad_csv(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write, message = CSV_CASES[case]
    csv = tmp_path / "prices.csv"
    write(csv)
    expect_error(capsys, *kospi_fit(csv, tmp_path / "runs"), inputs=[csv], match=message)


def test_missing_path_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(
        capsys,
        *kospi_fit(tmp_path / "nope.csv", tmp_path / "runs"),
        inputs=[],
        match=r"nope\.csv: no such file; pass a Yahoo-format daily CSV with --data\.csv_path",
    )
    expect_error(capsys, *kospi_fit(tmp_path, tmp_path / "runs"), inputs=[], match=r"is a directory")


SIZE_CASES = {
    # 80 rows, sequence_length 5: 75 windows.
    "too-few-rows": (["--data.sequence_length", "79"], r"80 rows are too few for sequence_length=79; need at least 81"),
    "split-too-large": (["--data.split", "500"], r"split=500 is larger than the 75 available"),
    "split-leaves-no-test": (["--data.split", "75"], r"split=75 leaves no test windows"),
    "split-fraction-above-one": (["--data.split", "1.5"], r"split as a fraction must lie in \(0, 1\), got 1\.5"),
    "val-larger-than-split": (["--data.val_size", "60"], r"val_size=60 is larger than the 50 available"),
    "val-equals-split": (["--data.val_size", "50"], r"val_size=50 leaves no training windows"),
}


@pytest.mark.parametrize("case", SIZE_CASES)
def test_sizes_that_do_not_fit_the_data(
    case: str, kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, message = SIZE_CASES[case]
    expect_error(capsys, *kospi_fit(kospi_csv, tmp_path / "runs", *extra), inputs=[kospi_csv], match=message)


ARGUMENT_CASES = {
    "sequence-length-zero": (["--data.sequence_length", "0"], r"sequence_length must be a positive integer, got 0"),
    "batch-size-zero": (["--data.batch_size", "0"], r"batch_size must be a positive integer, got 0"),
    "hidden-size-zero": (["--model.hidden_size", "0"], r"hidden_size must be a positive integer, got 0"),
    "num-layers-negative": (["--model.num_layers", "-1"], r"num_layers must be a positive integer, got -1"),
    "dropout-one": (["--model.dropout", "1.0"], r"dropout must lie in \[0, 1\), got 1\.0"),
    "dropout-negative": (["--model.dropout", "-0.1"], r"dropout must lie in \[0, 1\), got -0\.1"),
    "unknown-backbone": (
        ["--model.backbone", "transformer"],
        r"unknown backbone 'transformer'; choose one of rnn, lstm, gru, bilstm",
    ),
    # Type errors are jsonargparse's own; the CLI shortens its usage dump to one line.
    "hidden-size-text": (["--model.hidden_size", "eight"], r"model\.hidden_size: expected int, got eight"),
    "batch-size-float": (["--data.batch_size", "2.5"], r"data\.batch_size: expected int, got 2\.5"),
    "unknown-choice": (
        ["--data.scaler_fit", "everything"],
        r"data\.scaler_fit: expected one of 'train', 'all', got everything",
    ),
    "unknown-option": (["--model.hiden_size", "8"], r"unrecognized arguments: --model\.hiden_size 8"),
}


@pytest.mark.parametrize("case", ARGUMENT_CASES)
def test_bad_arguments(case: str, kospi_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra, message = ARGUMENT_CASES[case]
    expect_error(capsys, *kospi_fit(kospi_csv, tmp_path / "runs", *extra), inputs=[kospi_csv], match=message)


def test_debug_switch_shows_the_exception(kospi_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNN_LIGHTNING_DEBUG", "1")
    with pytest.raises(Exception) as info:
        run_cli(*kospi_fit(kospi_csv, tmp_path / "runs", "--data.sequence_length", "0"))
    # jsonargparse wraps errors raised while it instantiates the data module; ours is in the chain.
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, UserInputError) for e in chain)


# --- MNIST IDX files (missing files with download false: tests/test_rows.py) ----------------------------


def _truncate(path: Path) -> None:
    import gzip

    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))


def _torn_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _wrong_magic(path: Path) -> None:
    import gzip

    data = bytearray(gzip.decompress(path.read_bytes()))
    data[:4] = b"\x00\x00\x0d\x03"  # float64 IDX, not unsigned bytes
    path.write_bytes(gzip.compress(bytes(data)))


IDX_CASES = {
    "truncated": (
        _truncate,
        r"train-images-idx3-ubyte\.gz: truncated or corrupt IDX file: header says "
        r"\(200, 28, 28\) \(156816 bytes\), file has 78408 bytes",
    ),
    "torn-gzip": (_torn_gzip, r"train-images-idx3-ubyte\.gz: cannot read the IDX file"),
    "wrong-magic": (_wrong_magic, r"train-images-idx3-ubyte\.gz: not an IDX file of unsigned bytes"),
}


@pytest.mark.parametrize("case", IDX_CASES)
def test_corrupt_idx(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, message = IDX_CASES[case]
    root = write_mnist_dir(tmp_path / "mnist", n_train=200, n_test=20)
    corrupt(root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    expect_error(
        capsys,
        "fit",
        "--config",
        MNIST_CONFIG,
        "--data.data_dir",
        root,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        tmp_path / "runs",
        "--trainer.max_epochs",
        "1",
        inputs=[root],
        match=message,
    )


# --- Checkpoints ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kospi_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real one-epoch KOSPI run: its CSV and its last.ckpt."""
    root = tmp_path_factory.mktemp("kospi_run")
    csv = root / "prices.csv"
    make_price_frame().to_csv(csv, index=False)
    run_cli(*kospi_fit(csv, root / "runs", "--plots.enabled", "false"))
    return {"csv": csv, "ckpt": root / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"}


def _torn_copy(ckpt: Path, out: Path) -> Path:
    out.write_bytes(ckpt.read_bytes()[:1000])  # what a kill in the middle of a plain torch.save leaves
    return out


def _png(ckpt: Path, out: Path) -> Path:
    out.write_bytes(PNG_BYTES)
    return out


def _csv_as_ckpt(ckpt: Path, out: Path) -> Path:
    make_price_frame().to_csv(out, index=False)
    return out


BROKEN_CKPTS = {"torn": _torn_copy, "png": _png, "csv": _csv_as_ckpt}


@pytest.mark.parametrize("subcommand", ["fit", "test"])
@pytest.mark.parametrize("case", BROKEN_CKPTS)
def test_corrupt_checkpoint(
    case: str, subcommand: str, kospi_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = BROKEN_CKPTS[case](kospi_run["ckpt"], tmp_path / "model.ckpt")
    args = kospi_fit(kospi_run["csv"], tmp_path / "runs", "--ckpt_path", bad)
    args[0] = subcommand
    expect_error(
        capsys,
        *args,
        inputs=[bad, kospi_run["csv"]],
        match=r"checkpoint .*model\.ckpt: cannot be read \(\w+\); the file is truncated, "
        r"corrupt or not a PyTorch checkpoint",
    )
    # Checked before any data is read or any run folder is made.
    assert not (tmp_path / "runs").exists()


def test_missing_checkpoint(kospi_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(
        capsys,
        *kospi_fit(kospi_run["csv"], tmp_path, "--ckpt_path", tmp_path / "gone.ckpt"),
        inputs=[kospi_run["csv"]],
        match=r"checkpoint .*gone\.ckpt: no such file",
    )


def test_checkpoint_of_the_other_task(
    kospi_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_mnist_dir(tmp_path / "mnist", n_train=40, n_test=20)
    line = expect_error(
        capsys,
        "fit",
        "--config",
        MNIST_CONFIG,
        "--data.data_dir",
        root,
        "--data.download",
        "false",
        "--data.val_size",
        "10",
        "--trainer.default_root_dir",
        tmp_path / "runs",
        "--trainer.max_epochs",
        "1",
        "--ckpt_path",
        kospi_run["ckpt"],
        inputs=[root, kospi_run["ckpt"]],
        match=r"checkpoint .*last\.ckpt does not fit this model \(task: checkpoint 'regression' vs config "
        r"'classification', backbone: checkpoint 'gru' vs config 'bilstm', input_size: checkpoint 4 vs "
        r"config 28",
    )
    assert "config.yaml" in line


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_checkpoint_of_other_sizes(
    subcommand: str, kospi_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config wins: a checkpoint with hidden_size 8 is not silently loaded into a config that says 16."""
    args = kospi_fit(
        kospi_run["csv"],
        tmp_path / "runs",
        "--model.hidden_size",
        "16",
        "--model.num_layers",
        "1",
        "--ckpt_path",
        kospi_run["ckpt"],
    )
    args[0] = subcommand
    expect_error(
        capsys,
        *args,
        inputs=[kospi_run["csv"], kospi_run["ckpt"]],
        match=r"does not fit this model \(hidden_size: checkpoint 8 vs config 16, "
        r"num_layers: checkpoint 2 vs config 1\)",
    )


def test_checkpoint_of_other_data_settings(
    kospi_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same model sizes, other input columns: the scaler in the checkpoint would scale the wrong columns."""
    args = kospi_fit(
        kospi_run["csv"],
        tmp_path / "runs",
        "--data.features",
        "[Open, High, Low, Close]",
        "--ckpt_path",
        kospi_run["ckpt"],
    )
    args[0] = "test"
    expect_error(
        capsys,
        *args,
        inputs=[kospi_run["csv"], kospi_run["ckpt"]],
        match=r"different data settings \(features: checkpoint \['Open', 'High', 'Low', 'Volume'\] "
        r"vs now \['Open', 'High', 'Low', 'Close'\]\)",
    )


# --- The console script, as a user runs it --------------------------------------------------------------


def _console(args: list[object], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("rnn-lightning")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "rnn_lightning"]
    env = {k: v for k, v in os.environ.items() if k != "RNN_LIGHTNING_DEBUG"}
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "case",
    [
        "renamed-column",
        pytest.param("png-checkpoint", marks=pytest.mark.slow),
        pytest.param("dropout", marks=pytest.mark.slow),
        pytest.param("type-error", marks=pytest.mark.slow),
        pytest.param("empty-file", marks=pytest.mark.slow),
    ],
)
def test_console_script_prints_one_line(case: str, tmp_path: Path) -> None:
    csv = tmp_path / "prices.csv"
    make_price_frame().to_csv(csv, index=False)
    extra: list[object] = {
        "png-checkpoint": ["--ckpt_path", tmp_path / "chart.png"],
        "dropout": ["--model.dropout", "1.5"],
        "type-error": ["--model.num_layers", "two"],
    }.get(case, [])
    if case == "renamed-column":
        _rename_close(csv)
    elif case == "empty-file":
        csv.write_bytes(b"")
    elif case == "png-checkpoint":
        (tmp_path / "chart.png").write_bytes(PNG_BYTES)
    before = digest([tmp_path])
    result = _console(kospi_fit(csv.name, Path("runs"), *extra), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    expected = {
        "renamed-column": "prices.csv: missing column(s) Close",
        "png-checkpoint": "chart.png: cannot be read",
        "dropout": "dropout must lie in [0, 1), got 1.5",
        "type-error": "model.num_layers: expected int, got two",
        "empty-file": "prices.csv: the file is empty",
    }[case]
    assert expected in errors[0]
    after = {k: v for k, v in digest([tmp_path]).items() if not Path(k).is_relative_to(tmp_path / "runs")}
    assert after == before
