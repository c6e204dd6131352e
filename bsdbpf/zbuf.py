"""Zero-copy buffers: the two memory areas the kernel writes packets into.

This is the only code that builds a ``struct bpf_zbuf``.  The buffers are
anonymous ``mmap`` areas (page-aligned, a whole number of pages, zeroed),
exported to cffi with ``ffi.from_buffer(m, require_writable=True)``.  Their
owner (a :class:`bsdbpf.Descriptor`) must call :meth:`ZeroCopyBuffers.close`
only after the descriptor's fd is closed: until then the kernel keeps the
pages wired and may write into them.

The consumer side of the ownership protocol (bpf(4), spec section g):

* buffer *i* belongs to the process iff ``bzh_user_gen != bzh_kernel_gen``,
  checked with an acquire load of ``bzh_kernel_gen``; ``bzh_kernel_len`` is
  read only after that check;
* records lie in ``[32, 32 + bzh_kernel_len)``;
* the buffer is returned with a release store ``bzh_user_gen = kernel_gen``;
* the kernel hands buffers over strictly a, b, a, b, ... starting with a.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
from typing import Any, Callable

from bsdbpf._native import ffi, lib
from bsdbpf.errors import InternalError, InvalidArgument, from_errno

__all__ = ["HEADER_SIZE", "PAGE_SIZE", "ZeroCopyBuffers", "buffer_length"]

PAGE_SIZE = mmap.PAGESIZE
HEADER_SIZE = ffi.sizeof("struct bpf_zbuf_header")  # records start here

Ioctl = Callable[[int, Any], int]  # (request, cffi pointer) -> 0, raising on failure


def buffer_length(requested: int, zmax: int) -> int:
    """The length of each buffer: ``requested`` rounded up to whole pages.

    More than ``zmax`` (BIOCGETZMAX) raises :class:`InvalidArgument`, naming it.
    """
    length = -(-max(requested, 1) // PAGE_SIZE) * PAGE_SIZE
    if length > zmax:
        raise from_errno(errno.EINVAL, "BIOCSETZBUF", cls=InvalidArgument, hint=(
            f"a zero-copy buffer of {requested} bytes ({length} in whole pages) is larger "
            f"than the kernel's maximum, BIOCGETZMAX = {zmax} bytes"))
    return length


class ZeroCopyBuffers:
    """Two page-aligned anonymous mmaps and the consumer's side of the protocol."""

    def __init__(self, length: int) -> None:
        if length <= 0 or length % PAGE_SIZE:
            raise ValueError(f"zero-copy buffers are whole pages, not {length} bytes")
        self.length = length  #: bytes in each buffer, header included
        self._maps: list[mmap.mmap] = []
        self._cdata: list[Any] = []
        try:
            for _ in range(2):
                self._maps.append(mmap.mmap(-1, length))  # fresh: headers are zero
                self._cdata.append(ffi.from_buffer(self._maps[-1], require_writable=True))
        except BaseException:
            self.close()
            raise
        self._headers = [ffi.cast("struct bpf_zbuf_header *", c) for c in self._cdata]
        self._next = 0  # the buffer the kernel hands over next: a first
        self._held: int | None = None
        self._held_gen = 0
        self.closed = False

    @property
    def maps(self) -> tuple[mmap.mmap, ...]:
        """The two mmaps (a, b)."""
        return tuple(self._maps)

    def register(self, ioctl: Ioctl) -> None:
        """BIOCSETZBUF: give both buffers to the kernel (once, before BIOCSETIF)."""
        bufa, bufb = self._cdata  # named locals: alive until the call returns
        bz = ffi.new("struct bpf_zbuf *")
        bz.bz_bufa = bufa
        bz.bz_bufb = bufb
        bz.bz_buflen = self.length
        ioctl(lib.BIOCSETZBUF, bz)

    def rotate(self, ioctl: Ioctl) -> bool:
        """BIOCROTZBUF: ask the kernel to hand over a partially filled buffer.

        True if it did (then :meth:`take` finds it).
        """
        out = ffi.new("struct bpf_zbuf *")
        ioctl(lib.BIOCROTZBUF, out)
        return bool(out.bz_bufa != ffi.NULL)

    def take(self) -> tuple[int, int] | None:
        """If the next buffer belongs to the process: hold it and return
        ``(index, data_end)`` (records in ``[HEADER_SIZE, data_end)``), else None."""
        if self._held is not None:
            raise RuntimeError("acknowledge the held buffer first")
        hdr = self._headers[self._next]
        kernel_gen = lib.bsdbpf_load_acquire(ffi.addressof(hdr, "bzh_kernel_gen"))
        if hdr.bzh_user_gen == kernel_gen:
            return None  # still the kernel's
        length = hdr.bzh_kernel_len  # only meaningful after the acquire above
        if length > self.length - HEADER_SIZE:
            raise from_errno(errno.EIO, "zero-copy buffer", cls=InternalError, hint=(
                f"bzh_kernel_len {length} of buffer {'ab'[self._next]} exceeds its "
                f"{self.length - HEADER_SIZE} data bytes"))
        self._held, self._held_gen = self._next, kernel_gen
        return self._next, HEADER_SIZE + length

    def acknowledge(self) -> None:
        """Give the held buffer back: release store of ``bzh_user_gen``."""
        if self._held is None:
            return
        hdr = self._headers[self._held]
        lib.bsdbpf_store_release(ffi.addressof(hdr, "bzh_user_gen"), self._held_gen)
        self._held = None
        self._next ^= 1

    @property
    def holding(self) -> bool:
        """True while the process holds a buffer it has not acknowledged."""
        return self._held is not None

    def buffer(self, index: int) -> Any:
        """The cffi pointer to buffer ``index`` (for parsing)."""
        return self._cdata[index]

    def view(self, index: int) -> memoryview:
        """A new memoryview of buffer ``index``; the caller releases it."""
        return memoryview(self._maps[index])

    def close(self) -> None:
        """Release the cffi exports, then unmap.  Only after the fd is closed.

        A mapping still exported elsewhere (a view someone kept) is left to be
        unmapped when that view goes away.
        """
        self.closed = True
        self._headers = []
        for cdata in self._cdata:
            ffi.release(cdata)
        self._cdata = []
        for m in self._maps:
            # A live view keeps its mapping until it goes; the fd is closed, so that is safe.
            with contextlib.suppress(BufferError):
                m.close()
        self._maps = []
