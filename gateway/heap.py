"""Give the heap a burst of large messages left behind back to the operating system.

glibc keeps memory that Python frees in its arenas: a worker that checked eight 25 MB messages
at once stayed near 500 MB of RSS for good. `malloc_trim(0)` returns the free pages (a few
milliseconds). Where the C library is not glibc (2.33 or later, for `mallinfo2`) nothing here
is called, and the memory stays as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass
from typing import Any

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


@dataclass(frozen=True)
class _Glibc:
    mallinfo2: Any
    malloc_trim: Any


@functools.cache
def _glibc() -> _Glibc | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallinfo2, malloc_trim = libc.mallinfo2, libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc, or older than 2.33
        return None
    mallinfo2.restype = _MallInfo2
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return _Glibc(mallinfo2, malloc_trim)


def resident_bytes() -> int | None:
    """This process's resident set size (Linux), None where /proc does not tell."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def slack_bytes() -> int | None:
    """Resident memory not holding live malloc'd data: it grows when freed memory is kept
    (what `trim` gives back) and not when the process uses more. None where unknown."""
    libc = _glibc()
    resident = resident_bytes()
    if libc is None or resident is None:
        return None
    info = libc.mallinfo2()
    return int(resident - info.uordblks - info.hblkhd)


def trim() -> None:
    """Return the heap's free pages to the OS (only called where `slack_bytes` is known)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
