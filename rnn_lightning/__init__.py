"""Recurrent networks (RNN, LSTM, GRU, Bi-LSTM) for KOSPI forecasting and row-sequence MNIST, in Lightning."""

from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone
from rnn_lightning.models.module import RecurrentModel

__all__ = [
    "BACKBONES",
    "KospiDataModule",
    "RecurrentBackbone",
    "RecurrentModel",
    "RowMNISTDataModule",
    "UserInputError",
]
__version__ = "0.1.0"
