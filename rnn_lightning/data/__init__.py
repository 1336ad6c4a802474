"""Data modules: windowed daily prices (KOSPI) and row-sequence images (MNIST, Fashion-MNIST)."""

from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.data.rows import RowMNISTDataModule

__all__ = ["KospiDataModule", "RowMNISTDataModule"]
