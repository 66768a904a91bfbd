"""Keep freed host memory in the process for reuse instead of returning it to the OS (glibc only).

PyTorch's CPU allocator takes every tensor from `malloc`. glibc's `malloc` gives memory at the top of
its heap back to the OS whenever more than `M_TRIM_THRESHOLD` of it is free, and serves blocks above
`M_MMAP_THRESHOLD` by `mmap`, unmapped again when freed. Both thresholds adapt to the program (at most 32
and 64 MB). A training step frees most of what it allocated at its end (activations, gradients) and
allocates it again in the next step, so memory that was given back is faulted in afresh, page by page,
each step (Vid-ODE's step: tens of thousands of minor page faults, none once freed memory is kept;
docs/speed.md, session 20).

`keep_freed_memory(mb)` fixes the mmap threshold at glibc's maximum (32 MB) and the trim threshold at
`mb`: the process then keeps up to `mb` MB of freed memory at the top of its heap for the next step. What
other allocators do by default (jemalloc, tcmalloc), and what PyTorch's CPU tuning guide gets by
preloading them. Memory the step needs at its peak stays mapped between steps (it is needed again
at the next one). `vidyn train` calls it (`trainer.keep_freed_memory_mb`, default 1024; null leaves
glibc's defaults). On other C libraries (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory(mb: int) -> bool:
    """Keep up to `mb` MB of freed heap memory for reuse (and serve blocks up to 32 MB from the heap);
    True if set, False where the C library is not glibc. Process-wide and lasting: it applies to every
    allocation after the call, from any code."""
    if mb < 0:
        raise ValueError(f"keep_freed_memory: mb must be >= 0, got {mb}")
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(mb << 20, 2**31 - 1))) == 1 and ok
