"""Export a trained model as one self-contained ONNX or TorchScript file, checked against the checkpoint.

``rnn-lightning export`` takes the same config and ``--ckpt_path`` as ``test`` plus ``--export.*``.
(Work in progress: see issue 17.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rnn_lightning.cli import RnnLightningCLI


@dataclass
class ExportSettings:
    """The ``--export.*`` arguments.

    Args:
        format: ``onnx`` or ``torchscript``.
        path: The file to write; its folder must exist.
    """

    format: Literal["onnx", "torchscript"] = "onnx"
    path: str = "model.onnx"


def run_export(cli: RnnLightningCLI, model: Any, datamodule: Any, ckpt_path: str | None,
               settings: ExportSettings) -> None:
    """Write, check and describe the exported file (issue 17)."""
    raise NotImplementedError("rnn-lightning export is not built yet")
