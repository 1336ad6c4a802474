"""glibc's malloc told to keep freed memory, so that training steps stop paying page faults.

Every training step allocates and frees the same few tensors of a few hundred kilobytes to a few
megabytes (activations, oneDNN's RNN workspaces, their gradients). glibc hands blocks above its mmap
threshold (128 KiB at start, raised only by some frees) a fresh ``mmap`` and returns them to the kernel
when freed, and trims its heaps' tops back to the kernel as well, so the next step touches brand-new
pages again. On the row-MNIST Bi-LSTM that was 1.3 million minor page faults and 2.4 s of system time in
a 5 s epoch (``benchmarks/bench_speed.py``); with blocks up to 32 MiB kept in the heap, 0.17 million and
0.7 s, and the epoch took 3.5 s.

The settings are glibc's own tunables, the ones ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
set from the environment; when either variable is set, the user's choice stands and nothing changes here.
Elsewhere (macOS, musl) there is nothing to set. The cost is memory: up to 64 MiB of freed blocks may stay
with the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 32 * 2**20  # glibc's own ceiling for its self-adjusting mmap threshold (64-bit)
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Serve blocks below 32 MiB from the heap and trim it only past 64 MiB; True when glibc took it."""
    if any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt accepts and ignores)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BELOW))
