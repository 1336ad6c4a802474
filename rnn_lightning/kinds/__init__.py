"""The registry of data kinds (:mod:`rnn_lightning.kinds.base`): daily prices and row-sequence images."""

from rnn_lightning.kinds import images, panels, prices
from rnn_lightning.kinds.base import (
    KINDS,
    DataKind,
    Port,
    ServingModule,
    kind_named,
    kind_of,
    kinds,
    register,
    report_of,
)

__all__ = [
    "KINDS",
    "DataKind",
    "Port",
    "ServingModule",
    "images",
    "kind_named",
    "kind_of",
    "kinds",
    "panels",
    "prices",
    "register",
    "report_of",
]
