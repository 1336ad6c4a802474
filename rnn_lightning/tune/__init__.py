"""rnn-lightning tune: hyperparameter search scored by walk-forward backtests, with a verdict after searching."""
