"""Give the memory that training freed back to the operating system when training ends.

Why: a step's activations are freed when the step ends, but glibc keeps freed heap pages for the next
allocation, so after training the process still holds about the largest step's activations (hundreds of
MB for SmolLM2-135M) while it evaluates, merges or exports in the same process. ``malloc_trim(0)``
releases the free pages inside the heap, not only at its top. Once, after training: during training the
pages are reused by the next step, and trimming each step ran 15% slower (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import sys


def return_freed_heap() -> bool:
    """Release free heap pages to the OS; True when glibc released some. A no-op off Linux or glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own libc, as frozen_base's madvise
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))
