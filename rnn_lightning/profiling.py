"""The CLI's default profiler: Lightning's no-op profiler without the cost of its no-op.

Lightning wraps every hook call in ``trainer.profiler.profile(name)``, about 70 of them per training
step. Its default :class:`PassThroughProfiler` records nothing, but its ``profile`` is a generator-based
``contextlib.contextmanager``, so each call still builds and runs a generator: about 0.1 ms a step, or
~4% of the KOSPI fit's 2,700 tiny steps (``benchmarks/bench_speed.py``). This one hands back one shared
``nullcontext``. ``--trainer.profiler simple`` (or any other) replaces it as usual.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = nullcontext()


class NoProfiler(PassThroughProfiler):
    """:class:`PassThroughProfiler` whose ``profile()`` context costs a method call, not a generator."""

    def profile(self, action_name: str) -> AbstractContextManager:  # type: ignore[override]
        return _NOTHING
