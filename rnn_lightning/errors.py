"""The one exception type the command line turns into a one-line message, and the checks that raise it.

Every registry (backbones, heads, target transforms, data sets) and every size check uses these, so an
unknown name or a bad count reads the same wherever it is caught.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable


class UserInputError(ValueError):
    """Bad input a person can fix: a file, a column, a row, an argument or a checkpoint.

    The message names what is wrong and where, in one line. ``rnn-lightning`` prints it and exits with
    status 2; set ``RNN_LIGHTNING_DEBUG=1`` to see the traceback as well.
    """


def print_error(message: object) -> None:
    """``rnn-lightning: error: <message>`` on stderr: the one line every failure the CLI reports ends in."""
    print(f"rnn-lightning: error: {message}", file=sys.stderr, flush=True)


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise ``unknown NAME 'VALUE'; choose one of A, B, C`` unless ``value`` is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise UserInputError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")


def check_positive(name: str, value: int) -> None:
    """Raise unless ``value`` is an int >= 1 (``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")


def resolve_count(name: str, value: int | float, total: int, allow_zero: bool = True) -> int:
    """Turn an int count or a float fraction of ``total`` into a count, with a one-line error when invalid."""
    if isinstance(value, bool):
        raise UserInputError(f"{name} must be an int count or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value < 1.0:
            if value == 0.0 and allow_zero:
                return 0
            raise UserInputError(f"{name} as a fraction must lie in (0, 1), got {value}")
        return int(round(value * total))
    if value < 0 or (value == 0 and not allow_zero):
        raise UserInputError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")
    if value > total:
        raise UserInputError(f"{name}={value} is larger than the {total} available")
    return value


TYPE_ERROR = re.compile(r"Expected a (?:<class '([\w.]+)'>|typing\.Literal\[(.*)\])\. Got value: (.*)")


def one_line_parser_error(message: str) -> str:
    """Jsonargparse's multi-line type error as one line, e.g. ``data.batch_size: expected int, got 2.5``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    expected = re.search(TYPE_ERROR, message)
    if keys and expected:
        wanted = expected[1] or f"one of {expected[2]}"
        return f"{'.'.join(keys)}: expected {wanted}, got {expected[3].strip()}"
    return " ".join(message.split())


def user_input_error(err: BaseException | None) -> UserInputError | None:
    """The :class:`UserInputError` behind ``err`` (jsonargparse wraps those raised while instantiating), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
