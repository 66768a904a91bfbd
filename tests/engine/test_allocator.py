"""`vidyn.allocator.keep_freed_memory`: memory freed at the end of a step is reused without page faults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from vidyn.config import TrainerConfig
from vidyn.errors import VidynError
from vidyn.tasks.engine import prepare_runtime

# A training step's pattern: allocate 200 MB in 8 MB tensors, touch them, free them all. First under a trim
# threshold of 16 MB (where glibc's adaptive one settles once its mmap threshold has risen to 8 MB blocks:
# the freed top of the heap goes back to the OS), then after `keep_freed_memory`; in a fresh process, as
# the setting is process-wide and lasting. Prints the minor page faults of the last round of each setting.
_ROUNDS = textwrap.dedent(
    """
    import ctypes, resource, torch
    from vidyn.allocator import M_TRIM_THRESHOLD, keep_freed_memory

    def round_faults():
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tensors = [torch.empty(2 << 20).fill_(1.0) for _ in range(25)]
        del tensors
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    ctypes.CDLL("libc.so.6").mallopt(M_TRIM_THRESHOLD, 16 << 20)
    trimmed = [round_faults() for _ in range(3)][-1]
    kept = keep_freed_memory(1024)
    after = [round_faults() for _ in range(6)][-1]  # the heap settles within a few rounds
    print(trimmed, kept, after)
    """
)


def test_freed_memory_is_reused_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", _ROUNDS], capture_output=True, text=True, check=True)
    trimmed, kept, after = out.stdout.split()
    assert kept == "True"  # this machine's C library is glibc
    # 200 MB are 51,200 pages of 4 KB: every round faults them in again while the heap is trimmed
    assert int(trimmed) > 40_000
    assert int(after) < 1_000


def test_a_negative_amount_is_a_config_error() -> None:
    with pytest.raises(VidynError, match=r"trainer.keep_freed_memory_mb must be >= 0"):
        prepare_runtime(TrainerConfig(keep_freed_memory_mb=-1))
