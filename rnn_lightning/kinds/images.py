"""Row-sequence images: each 28x28 image read as 28 time steps of 28 pixels, classified."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnn_lightning.data.batches import Images
from rnn_lightning.kinds.base import DataKind, Port, ServingModule, register
from rnn_lightning.reports import mnist


class ImageClassifier(ServingModule):
    """uint8 pixels (B, 28, 28) -> the head's prediction rows (class probabilities (B, 10))."""

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        batch = Images(pixels, pixels.new_zeros(pixels.shape[0], dtype=torch.int64))  # labels: unused
        rows = self.model.forecast(batch)
        return tuple(rows[key] for key in self.outputs)


class RowImages(DataKind):
    """Images read row by row: a classification, tuned on the validation loss, tested once."""

    name = "row_images"
    task = "classification"
    tune_objective = "validation"
    report = mnist
    default_outputs = ("probabilities",)
    output_descriptions = {"probabilities": "class probabilities"}

    def serving_module(self, model: Any, outputs: tuple[str, ...]) -> ServingModule:
        return ImageClassifier(model, outputs)

    def check_batch(self, datamodule: Any) -> Images:
        """The test split."""
        return Images(*datamodule.split_tensors("test"))

    def export_inputs(self, model: Any, batch: Any) -> tuple[Tensor, ...]:
        return (batch.x.to(model.scaling.raw_dtype),)

    def input_ports(self, model: Any, wrapper: ServingModule) -> list[Port]:
        steps, width = model.hparams.sequence_length, model.hparams.input_size
        return [Port("pixels", "uint8", ("batch", steps, width), "images, one row of pixels per time step")]


ROW_IMAGES = register(RowImages())
