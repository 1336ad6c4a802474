"""Calendar features of a panel's timestamps: which ones a frequency has, as integers and as sin/cos.

The features are small integers from 0 (month of year 0..11, day of week 0..6 with Monday 0, ...), so
a model can embed them; :func:`cyclic_encoding` turns them into sin/cos pairs instead, where December
lies next to January. Which features a frequency gets: the cycles shorter than a year that its steps
resolve (a yearly series has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pandas.tseries import offsets as po
from pandas.tseries.frequencies import to_offset
from torch import Tensor

# Step kind -> the features it gets, each (name, number of values).
FEATURES: dict[str, tuple[tuple[str, int], ...]] = {
    "yearly": (),
    "quarterly": (("quarter_of_year", 4),),
    "monthly": (("month_of_year", 12),),
    "weekly": (("week_of_year", 53), ("month_of_year", 12)),
    "daily": (("day_of_week", 7), ("month_of_year", 12)),
    "hourly": (("hour_of_day", 24), ("day_of_week", 7)),
    "minutely": (("minute_of_hour", 60), ("hour_of_day", 24)),
    "secondly": (("second_of_minute", 60), ("minute_of_hour", 60)),
}
_KINDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("yearly", (po.YearBegin, po.YearEnd, po.BYearBegin, po.BYearEnd)),
    ("quarterly", (po.QuarterBegin, po.QuarterEnd, po.BQuarterBegin, po.BQuarterEnd)),
    (
        "monthly",
        (po.MonthBegin, po.MonthEnd, po.BusinessMonthBegin, po.BusinessMonthEnd, po.SemiMonthBegin, po.SemiMonthEnd),
    ),
    ("weekly", (po.Week,)),
    ("daily", (po.Day, po.BusinessDay, po.CustomBusinessDay)),
    ("hourly", (po.Hour, po.BusinessHour)),
    ("minutely", (po.Minute,)),
    ("secondly", (po.Second,)),
)


@dataclass(frozen=True)
class Calendar:
    """Integer calendar features of every position of a panel layout.

    Attributes:
        names: Feature names, e.g. ``("day_of_week", "month_of_year")``.
        periods: How many values each feature takes (7, 12): its embedding size or sin/cos period.
        values: int16 (T, n_features), feature ``j`` of position ``p`` at ``values[p, j]``.
    """

    names: tuple[str, ...]
    periods: tuple[int, ...]
    values: np.ndarray


def step_kind(freq: str) -> str:
    """``yearly``, ``quarterly``, ``monthly``, ``weekly``, ``daily``, ``hourly``, ``minutely`` or ``secondly``.

    Frequencies finer than a second count as ``secondly``; anything unknown as ``daily``.
    """
    offset = to_offset(freq)
    for kind, types in _KINDS:
        if isinstance(offset, types):
            return kind
    return "secondly" if isinstance(offset, po.Tick) else "daily"


def calendar_features(timestamps: np.ndarray, freq: str, chunk_rows: int = 1 << 22) -> Calendar:
    """The :data:`FEATURES` of ``freq``'s kind for each timestamp, as int16 from 0.

    Computed ``chunk_rows`` timestamps at a time: pandas' field arrays are int32/int64 per timestamp, so
    one pass over 3 x 10^8 rows would hold gigabytes of them; the result is the int16 array alone.
    """
    wanted = FEATURES[step_kind(freq)]
    columns = {
        "quarter_of_year": lambda index: index.quarter - 1,
        "month_of_year": lambda index: index.month - 1,
        "week_of_year": lambda index: index.isocalendar().week.to_numpy() - 1,
        "day_of_week": lambda index: index.day_of_week,
        "hour_of_day": lambda index: index.hour,
        "minute_of_hour": lambda index: index.minute,
        "second_of_minute": lambda index: index.second,
    }
    values = np.zeros((len(timestamps), len(wanted)), dtype=np.int16)
    for low in range(0, len(timestamps), chunk_rows):
        index = pd.DatetimeIndex(timestamps[low : low + chunk_rows])
        for j, (name, _) in enumerate(wanted):
            values[low : low + len(index), j] = np.asarray(columns[name](index), dtype=np.int16)
    return Calendar(names=tuple(n for n, _ in wanted), periods=tuple(p for _, p in wanted), values=values)


def cyclic_encoding(features: Tensor, periods: tuple[int, ...]) -> Tensor:
    """float32 (..., 2 * n_features): ``sin`` then ``cos`` of ``2 pi value / period`` per feature.

    Args:
        features: Integer calendar features (..., n_features), e.g. a batch's ``calendar_x``.
        periods: Each feature's number of values (:attr:`Calendar.periods`).
    """
    angle = features.to(torch.float32) * (2 * torch.pi / torch.tensor(periods, dtype=torch.float32))
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
