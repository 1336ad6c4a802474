"""Data modules: windowed daily prices (any Yahoo-format daily CSV) and row-sequence images (MNIST, Fashion-MNIST)."""

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.data.rows import RowMNISTDataModule

__all__ = ["DailyPricesDataModule", "KospiDataModule", "RowMNISTDataModule"]
