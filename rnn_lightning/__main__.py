"""``python -m rnn_lightning``: the same command as ``rnn-lightning``."""

from rnn_lightning.cli import main

if __name__ == "__main__":
    main()
