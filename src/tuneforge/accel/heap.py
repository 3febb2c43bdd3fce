"""Give the memory that training freed back to the operating system when training ends.

Why: a step's activations are freed when the step ends, but the allocator keeps freed pages for the
next allocation, so after training the process still holds about the largest step's activations
(hundreds of MB for SmolLM2-135M) while it evaluates, merges or exports in the same process. Each
allocator has its own call for it: glibc's ``malloc_trim(0)`` (free pages inside the heap, not only at
its top), tcmalloc's ``MallocExtension_ReleaseFreeMemory`` and jemalloc's ``arena.<all>.purge`` (see
``tuneforge.accel.allocator`` for which one runs). Once, after training: during training the pages are
reused by the next step, and trimming each step ran 15% slower (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import sys

JEMALLOC_ALL_ARENAS = b"arena.4096.purge"  # MALLCTL_ARENAS_ALL


def return_freed_heap() -> bool:
    """Release freed heap pages to the OS; True when the allocator says it did (or cannot say).

    A no-op off Linux, and with an allocator that has none of these calls (musl, others).
    """
    if not sys.platform.startswith("linux"):
        return False
    process = ctypes.CDLL(None)  # the symbols the process resolves: a preloaded allocator's first
    release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)
    if release is not None:  # tcmalloc
        release.restype = None
        release()
        return True
    mallctl = getattr(process, "mallctl", None)
    if mallctl is not None:  # jemalloc: this thread's cache back to the arenas, then their unused pages
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        mallctl(b"thread.tcache.flush", None, None, None, 0)
        return mallctl(JEMALLOC_ALL_ARENAS, None, None, None, 0) == 0
    trim = getattr(process, "malloc_trim", None)  # glibc
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))
