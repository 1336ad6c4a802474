"""keep_freed_memory: a freed block stays with the process for the next step instead of going back to the
kernel (and being faulted in again, page by page)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rnn_lightning.allocator

# A bare interpreter each time: the setting is process-wide, and glibc adjusts its thresholds as a process
# frees memory, so only a fresh process shows the starting behaviour. The module is loaded from its file,
# without the package's heavy imports.
STEPS = textwrap.dedent(
    """
    import ctypes, importlib.util, sys
    spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
    allocator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(allocator)
    took = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = Mallinfo2
    size = 16 << 20  # an activation-sized block
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    print(took, libc.mallinfo2().fordblks >= size)  # is the freed block still held by the process?
    """
)

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc.so.6" not in (ctypes.util.find_library("c") or ""),
    reason="glibc's malloc",
)


def run_steps(mode: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode, str(Path(rnn_lightning.allocator.__file__))],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    )
    return done.stdout.split()


@glibc
def test_a_freed_block_stays_with_the_process() -> None:
    assert run_steps("default") == ["None", "False"]  # glibc's default: unmapped, faulted in again next time
    assert run_steps("keep") == ["True", "True"]


@glibc
def test_the_users_malloc_environment_wins() -> None:
    assert run_steps("keep", MALLOC_MMAP_THRESHOLD_="131072") == ["False", "False"]
