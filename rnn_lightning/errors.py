"""The one exception type that the command line turns into a one-line message instead of a traceback."""


class UserInputError(ValueError):
    """Bad input a person can fix: a file, a column, a row, an argument or a checkpoint.

    The message names what is wrong and where, in one line. ``rnn-lightning`` prints it and exits with
    status 2; set ``RNN_LIGHTNING_DEBUG=1`` to see the traceback as well.
    """
