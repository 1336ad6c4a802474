"""darts' walk-forward backtest of the tutorial's KOSPI GRU: the peer side of ``bench_backtest.py`` part d.

Runs under a Python that has ``darts[torch]`` (0.48.1 was measured; it is not a dependency of this project)::

    python -m venv /tmp/darts && /tmp/darts/bin/pip install "darts[torch]==0.48.1"
    /tmp/darts/bin/python benchmarks/darts_backtest.py            # or through bench_backtest.py --darts-python

What it does, as issue 15 describes darts' figure: ``BlockRNNModel`` GRU with the tutorial's sizes (5-day input
chunk, hidden 8 x 2 layers, batch 20, Adam lr 1e-3, 301 epochs a fit), the Close as the target series and
Open/High/Low/Volume as past covariates, and ``historical_forecasts`` one day ahead over the last
``folds x test_size`` days with ``retrain=test_size``: one fit every ``test_size`` days on all days before it,
with a ``Scaler`` (MinMax) for each series refitted at every retraining (``data_transformers``). That is the
same folds as ``rnn-lightning backtest --config configs/kospi_gru.yaml --backtest.folds 5
--backtest.test_size 40``; darts validates nothing (the project holds out 20 windows for the best checkpoint).

Prints one JSON line: the seconds of the historical forecasts (imports and CSV read excluded), the torch
threads, and the RMSE of the forecasts and of the naive forecast in index points.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

CSV = Path(__file__).resolve().parents[1] / "rnn_lightning" / "data" / "examples" / "kospi_2019.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=301)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler
    from darts.models import BlockRNNModel

    frame = pd.read_csv(args.csv).replace("null", np.nan).dropna().reset_index(drop=True)
    frame = frame.astype({c: "float64" for c in ("Open", "High", "Low", "Close", "Volume")})
    series = TimeSeries.from_dataframe(frame, value_cols="Close").astype(np.float32)  # a RangeIndex: trading days
    covariates = TimeSeries.from_dataframe(frame, value_cols=["Open", "High", "Low", "Volume"]).astype(np.float32)
    test_days = args.folds * args.test_size
    model = BlockRNNModel(
        model="GRU",
        input_chunk_length=5,
        output_chunk_length=1,
        hidden_dim=8,
        n_rnn_layers=2,
        batch_size=20,
        n_epochs=args.epochs,
        optimizer_kwargs={"lr": 1e-3},
        random_state=42,
        pl_trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False},
    )
    start = time.perf_counter()
    forecasts = model.historical_forecasts(
        series,
        past_covariates=covariates,
        start=len(series) - test_days,
        start_format="position",
        forecast_horizon=1,
        stride=1,
        retrain=args.test_size,
        last_points_only=True,
        data_transformers={"series": Scaler(), "past_covariates": Scaler()},
        verbose=False,
        show_warnings=False,
    )
    seconds = time.perf_counter() - start
    predicted = forecasts.values().ravel().astype(np.float64)
    close = frame["Close"].to_numpy()
    actual, naive = close[-test_days:], close[-test_days - 1 : -1]
    print(
        json.dumps(
            {
                "darts_seconds": seconds,
                "threads": torch.get_num_threads(),
                "forecasts": len(predicted),
                "rmse": float(np.sqrt(np.mean((predicted - actual) ** 2))),
                "naive_rmse": float(np.sqrt(np.mean((naive - actual) ** 2))),
            }
        )
    )


if __name__ == "__main__":
    main()
