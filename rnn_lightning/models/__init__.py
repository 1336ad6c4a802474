"""Recurrent backbones by name and the LightningModule that wraps them."""

from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone
from rnn_lightning.models.module import RecurrentModel

__all__ = ["BACKBONES", "RecurrentBackbone", "RecurrentModel"]
