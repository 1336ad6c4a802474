"""The installed version; the one source is pyproject.toml, read through the package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rnn-lightning")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
