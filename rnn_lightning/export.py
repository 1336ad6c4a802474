"""Export a trained model as one self-contained ONNX or TorchScript file, checked against the checkpoint.

``rnn-lightning export`` takes the same config and ``--ckpt_path`` as ``test`` plus ``--export.format``
(``onnx`` or ``torchscript``) and ``--export.path``. The file maps raw inputs to final outputs, with the
model's scaling, network and head inside the graph (docs/export.md):

* prices: ``windows`` (B, T, F) float64 in the CSV's units, plus ``last_close`` (B,) float64 when the
  target or the window normalisation is relative to it, to ``prediction`` (B,) float64 in index points
  (or whatever shape the head's ``prediction`` has, e.g. (B, H[, Q])).
* images: ``pixels`` (B, 28, 28) uint8 to ``probabilities`` (B, 10) float32.

The batch size is dynamic. The file's metadata (ONNX ``metadata_props`` key ``rnn_lightning``;
TorchScript extra file ``rnn_lightning.json``) holds one JSON object: input and output names, dtypes and
shapes, the data settings the model was trained on and the project version.

After writing, the file is run (onnxruntime or ``torch.jit.load``) on a batch of one and on every sample
``predict`` covers for prices (every window, then tomorrow's) or on the test split for images, and
compared with the checkpoint's predictions through the project's own predict path
(:func:`rnn_lightning.reports.common.predict_all`). The file is written under a temporary name beside the
target and renamed only once that check passes, so a failed export leaves no file.

The ONNX file comes from torch's default, ``torch.export``-based exporter (``dynamo=True``): the legacy
TorchScript-based one is deprecated for removal and warns that GRU exports may not generalise to other
batch sizes; the new one gives the standard ONNX LSTM/GRU/RNN graphs, bidirectional included, with a
symbolic batch dimension.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rnn_lightning import runs
from rnn_lightning.errors import UserInputError, check_choice
from rnn_lightning.kinds import DataKind, Port, ServingModule, kind_of
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.runs import RunConfig, read_checkpoint
from rnn_lightning.version import __version__

FORMATS = ("onnx", "torchscript")
EXTRA_HINT = "install the export extra: pip install -e '.[export]'"
METADATA_KEY = "rnn_lightning"  # ONNX metadata_props key; TorchScript extra file METADATA_KEY + ".json"
TORCHSCRIPT_EXTRA_FILE = f"{METADATA_KEY}.json"
# Agreement with the checkpoint: |file - predict| <= ATOL_FRACTION * max|predict| + RTOL * |predict|.
# Both compute the same float32 network (only the kernels differ: onnxruntime's LSTM vs ATen's), so
# they differ by float32 rounding (eps 1.2e-7) accumulated over the recurrence and readout, measured at
# up to 1e-6 of the largest value (MNIST Bi-LSTM 12x2, 10,000 test images; KOSPI: 2e-8 of the price);
# 1e-5 leaves 10x margin and still catches any real mismatch (wrong weights or scaling, a graph
# specialised to one batch size), which is off by whole percents.
RTOL = 1e-5
ATOL_FRACTION = 1e-5
EXAMPLE_BATCH = 3  # the traced example's batch size: not 0 or 1, which torch.export would specialise on
CHUNK = 2048  # samples per run of the exported file during the check


@dataclass
class ExportSettings:
    """The ``--export.*`` arguments.

    Args:
        format: ``onnx`` or ``torchscript``.
        path: The file to write; its folder must exist. An existing file is replaced once the new one
            has passed the check.
    """

    format: Literal["onnx", "torchscript"] = "onnx"
    path: str = "model.onnx"


def check_settings(settings: ExportSettings, ckpt_path: str | None) -> Path:
    """Refuse what would fail later, before any work: the format, the checkpoint, the target folder, the extra.

    Returns:
        The target path.
    """
    check_choice("export format", settings.format, FORMATS)
    if not ckpt_path:
        raise UserInputError("export needs the checkpoint to export: pass --ckpt_path FILE")
    if not Path(ckpt_path).is_file():
        raise UserInputError(f"checkpoint {ckpt_path}: no such file (export needs a checkpoint file path)")
    path = Path(settings.path)
    if path.is_dir():
        raise UserInputError(f"export path {path} is a folder; name the file to write, e.g. {path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise UserInputError(f"export path {path}: folder {path.parent} does not exist")
    if settings.format == "onnx":
        for module in ("onnx", "onnxruntime", "onnxscript"):
            try:
                __import__(module)
            except ImportError:
                raise UserInputError(f"ONNX export needs {module}: {EXTRA_HINT}") from None
    return path


def run_export(config: RunConfig, ckpt_path: str | None, settings: ExportSettings) -> Path:
    """``rnn-lightning export``: a plain function of the config, the checkpoint and ``--export.*``.

    The settings and the checkpoint are checked before any data is read; the model and its data module
    come from the run factory (no Trainer: nothing trains), the data read for ``test``, the checkpoint
    checked against both, then :func:`write_export`.

    Args:
        config: The checkpoint's config (its model and data settings).
        ckpt_path: The checkpoint file.
        settings: ``--export.*``.
    """
    check_settings(settings, ckpt_path)
    assert ckpt_path is not None  # check_settings refuses a missing one
    checkpoint = read_checkpoint(ckpt_path)
    model, datamodule = runs.build_model(config)
    datamodule.prepare_data()
    datamodule.setup("test")
    runs.check_checkpoint(model, datamodule, checkpoint, source=f"checkpoint {ckpt_path}")
    return write_export(model, datamodule, checkpoint, ckpt_path, settings)


def write_export(
    model: RecurrentModel, datamodule: Any, checkpoint: dict[str, Any], ckpt_path: str, settings: ExportSettings
) -> Path:
    """Load the checkpoint into ``model``, write the file, check it against predict, then rename it into place.

    The settings and the checkpoint were checked already (:func:`check_settings`,
    :func:`rnn_lightning.runs.read_checkpoint`): the CLI does that before it reads any data.

    Args:
        model: The config's :class:`~rnn_lightning.models.module.RecurrentModel`, not yet loaded.
        datamodule: The config's data module, already set up for ``test``.
        checkpoint: The checkpoint's contents.
        ckpt_path: Where they came from (named in messages and in the file's metadata).
        settings: ``--export.*``.

    Returns:
        The file written.

    Raises:
        UserInputError: A checkpoint that does not load, or a file that disagrees with the checkpoint
            (then no file is left).
    """
    path = Path(settings.path)
    load_checkpoint(model, checkpoint, ckpt_path)
    model = model.for_export()  # a copy: the model trained and checked stays as it is
    wrapper = serving_module(model, kind_of(datamodule))
    inputs = split_inputs(model, datamodule)
    expected = expected_outputs(model, datamodule, wrapper.outputs)
    metadata = describe(model, datamodule, wrapper, settings.format, Path(ckpt_path).name)
    temporary = temporary_path(path)
    try:
        if settings.format == "onnx":
            write_onnx(wrapper, inputs, metadata, temporary)
        else:
            write_torchscript(wrapper, inputs, metadata, temporary)
        runner = load_runner(temporary, settings.format)
        diffs = compare(runner, inputs, expected, wrapper.outputs)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    samples = len(inputs[0])
    summary = ", ".join(f"{name} max abs {a:.2e} rel {r:.2e}" for name, (a, r) in diffs.items())
    ports, outs = (", ".join(_port_text(p) for p in metadata[side]) for side in ("inputs", "outputs"))
    print(
        f"rnn-lightning: wrote {path} ({settings.format}: {ports} -> {outs}); matches the checkpoint's "
        f"predictions on {samples} samples and a batch of 1 ({summary})"
    )
    return path


# --- steps ------------------------------------------------------------------------------------------------


def load_checkpoint(model: RecurrentModel, checkpoint: dict[str, Any], ckpt_path: str) -> None:
    """The checkpoint's weights and scaling into ``model``, in eval mode; a mismatch is one line."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise UserInputError(f"checkpoint {ckpt_path} does not fit this model: {detail}") from None
    model.cpu().eval()
    if not model.scaling.is_fitted:
        raise UserInputError(f"checkpoint {ckpt_path} holds no fitted scaling; export a checkpoint of a fit")


def serving_module(model: RecurrentModel, kind: DataKind) -> ServingModule:
    """The wrapper that becomes the exported graph: raw inputs in, the head's prediction rows out."""
    outputs = model.head.export_outputs() or kind.default_outputs
    return kind.serving_module(model, tuple(outputs)).eval()


def split_inputs(model: RecurrentModel, datamodule: Any) -> tuple[Tensor, ...]:
    """The exported graph's inputs for the kind's check batch, in the graph's input order."""
    kind = kind_of(datamodule)
    return kind.export_inputs(model, kind.check_batch(datamodule))


def expected_outputs(model: RecurrentModel, datamodule: Any, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The checkpoint's predictions on :func:`check_batch` through the project's predict path."""
    from rnn_lightning.reports.common import predict_all

    batch = kind_of(datamodule).check_batch(datamodule)
    if not len(batch[0]):
        raise UserInputError("the test split is empty: nothing to check the exported file on")
    rows = predict_all(model, batch)
    return {key: rows[key].numpy() for key in keys}


def describe(
    model: RecurrentModel, datamodule: Any, wrapper: ServingModule, fmt: str, checkpoint: str
) -> dict[str, Any]:
    """The JSON stored in the file: inputs, outputs, data settings, model settings, version."""
    kind = kind_of(datamodule)
    example = example_inputs(split_inputs(model, datamodule))
    with torch.no_grad():
        produced = wrapper(*example)
    inputs = kind.input_ports(model, wrapper)
    outputs = [
        Port(key, str(value.dtype).removeprefix("torch."), ("batch", *value.shape[1:]), kind.output_description(key))
        for key, value in zip(wrapper.outputs, produced, strict=True)
    ]
    identity = {}
    if callable(getattr(datamodule, "state_dict", None)):
        identity = dict(datamodule.state_dict().get("identity", {}))
    hparams = {
        k: model.hparams[k]
        for k in ("backbone", "hidden_size", "num_layers", "bidirectional", "members", "readout", "head", "task")
        if k in model.hparams
    }
    return {
        "format": fmt,
        "rnn_lightning_version": __version__,
        "inputs": [p.as_dict() for p in inputs],
        "outputs": [p.as_dict() for p in outputs],
        "data": identity,
        "model": hparams,
        "checkpoint": checkpoint,
    }


def example_inputs(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A few samples of ``inputs`` to trace with: EXAMPLE_BATCH of them, repeated if the split is smaller."""
    rows = torch.arange(EXAMPLE_BATCH) % len(inputs[0])
    return tuple(t.index_select(0, rows) for t in inputs)


def write_onnx(wrapper: nn.Module, inputs: tuple[Tensor, ...], metadata: dict[str, Any], path: Path) -> None:
    """One self-contained ONNX file (weights inside, no external data), batch dimension symbolic."""
    import onnx

    batch = torch.export.Dim("batch")
    names = [p["name"] for p in metadata["inputs"]]
    with quiet():
        program = torch.onnx.export(
            wrapper,
            example_inputs(inputs),
            None,
            input_names=names,
            output_names=[p["name"] for p in metadata["outputs"]],
            dynamic_shapes=tuple({0: batch} for _ in names),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    assert program is not None  # torch.onnx.export(dynamo=True) returns the program
    proto = program.model_proto
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    proto.producer_name = "rnn-lightning"
    proto.producer_version = __version__
    onnx.save(proto, str(path))


def write_torchscript(wrapper: nn.Module, inputs: tuple[Tensor, ...], metadata: dict[str, Any], path: Path) -> None:
    """A traced TorchScript file with the metadata as the extra file ``rnn_lightning.json``."""
    try:  # what LightningModule.to_torchscript uses: its ``trainer`` property would raise during tracing
        from lightning.pytorch.core.module import _jit_is_scripting
    except ImportError:  # a Lightning without it
        _jit_is_scripting = contextlib.nullcontext
    with quiet(), torch.no_grad(), _jit_is_scripting():
        traced = torch.jit.trace(wrapper, example_inputs(inputs), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata)})


def load_runner(path: Path, fmt: str) -> Callable[..., list[np.ndarray]]:
    """A function from input arrays/tensors to the file's outputs as numpy arrays."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*inputs: Tensor) -> list[np.ndarray]:
            outputs: list[np.ndarray] = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
            return outputs

        return run_onnx
    with quiet():
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run_torchscript(*inputs: Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in loaded(*inputs)]

    return run_torchscript


def compare(
    runner: Callable[..., list[np.ndarray]],
    inputs: tuple[Tensor, ...],
    expected: dict[str, np.ndarray],
    keys: tuple[str, ...],
) -> dict[str, tuple[float, float]]:
    """Run the file over ``inputs`` (in chunks, and on a batch of one); raise unless it matches ``expected``.

    Returns:
        Per output, the largest absolute and relative difference.
    """
    n = len(inputs[0])
    chunks = [runner(*(t[s : s + CHUNK] for t in inputs)) for s in range(0, n, CHUNK)]
    single = runner(*(t[:1] for t in inputs))
    diffs: dict[str, tuple[float, float]] = {}
    for i, key in enumerate(keys):
        got = np.concatenate([c[i] for c in chunks])
        want = expected[key]
        if got.shape != want.shape or single[i].shape != want[:1].shape:
            raise UserInputError(
                f"the exported file's {key} has shape {got.shape}, the checkpoint's predictions {want.shape}; "
                "no file written"
            )
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        atol = ATOL_FRACTION * float(np.nanmax(np.abs(want64))) if want64.size else 0.0
        close = np.isclose(got64, want64, rtol=RTOL, atol=atol, equal_nan=True)
        close_single = np.isclose(single[i].astype(np.float64), want64[:1], rtol=RTOL, atol=atol, equal_nan=True)
        abs_diff = np.abs(got64 - want64)
        rel_diff = abs_diff / np.maximum(np.abs(want64), np.finfo(np.float64).tiny)
        worst = (float(np.nanmax(abs_diff, initial=0.0)), float(np.nanmax(rel_diff, initial=0.0)))
        if not (close.all() and close_single.all()):
            bad = int((~close).sum()) + int((~close_single).sum())
            raise UserInputError(
                f"the exported file disagrees with the checkpoint's {key} on {bad} of {n} samples "
                f"(max abs diff {worst[0]:.3g}, max rel {worst[1]:.3g}; allowed rtol {RTOL}, atol {atol:.3g}); "
                "no file written"
            )
        diffs[key] = worst
    return diffs


# --- helpers ----------------------------------------------------------------------------------------------


def _port_text(port: dict[str, Any]) -> str:
    """``windows (batch, 5, 4) float64``."""
    shape = ", ".join(str(d) for d in port["shape"])
    return f"{port['name']} ({shape}{',' if len(port['shape']) == 1 else ''}) {port['dtype']}"


def temporary_path(path: Path) -> Path:
    """A new, empty file beside ``path`` to write into, renamed over ``path`` once checked."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only 0600
    return Path(name)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress lines and deprecation/tracer warnings, hidden (the check tells the truth).

    That includes onnxscript's optimizer's logged notes ("Skipping constant folding for op Split ..."),
    its logger raised to ERROR for the export only.
    """
    sink = io.StringIO()
    optimizer_log = logging.getLogger("onnxscript")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        try:
            yield
        except Exception:
            sys.stderr.write(sink.getvalue())
            raise
        finally:
            optimizer_log.setLevel(level)
