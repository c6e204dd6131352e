"""Zero-copy buffers: the two memory areas the kernel writes packets into.

The two buffers are the two halves of one anonymous shared-memory object (a
memfd on Linux, ``SHM_ANON`` on FreeBSD), each mapped twice:

* the *kernel mapping* (page-aligned, a whole number of pages, zeroed) is
  what BIOCSETZBUF registers and what the ownership protocol reads and writes;
* the *view mapping* shows the same pages; packets, columns and views handed
  to users point into it.  When a buffer goes back to the kernel while a view
  a user derived is still exported, :meth:`ZeroCopyBuffers.freeze` turns that
  view mapping into a private copy (and a fresh view mapping serves the next
  round), so the view keeps the bytes it had.  Without such exports nothing
  is copied.

Their owner (a :class:`bsdbpf.Descriptor`) must call :meth:`ZeroCopyBuffers.close`
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
import os
from typing import Any

from bsdbpf._capture import freeze, shared_memory
from bsdbpf._native import ffi, lib
from bsdbpf.errors import InternalError, InvalidArgument, from_errno

__all__ = ["HEADER_SIZE", "PAGE_SIZE", "ZeroCopyBuffers", "buffer_length"]

PAGE_SIZE = mmap.PAGESIZE
HEADER_SIZE = ffi.sizeof("struct bpf_zbuf_header")  # records start here

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
    """Two buffers of one shared-memory object, each mapped for the kernel and
    for views, and the consumer's side of the ownership protocol."""

    def __init__(self, length: int) -> None:
        if length <= 0 or length % PAGE_SIZE:
            raise ValueError(f"zero-copy buffers are whole pages, not {length} bytes")
        self.length = length  #: bytes in each buffer, header included
        self._fd = -1
        self._maps: list[mmap.mmap] = []  # the kernel mappings, a and b
        self._views: list[mmap.mmap] = []  # the view mappings, a and b
        self._cdata: list[Any] = []
        self._fd = shared_memory(2 * length)
        try:
            for i in range(2):
                self._maps.append(mmap.mmap(self._fd, length, offset=i * length))
                self._cdata.append(ffi.from_buffer(self._maps[-1], require_writable=True))
                self._views.append(self._view_mapping(i))
        except BaseException:
            self.close()
            raise
        self._headers = [ffi.cast("struct bpf_zbuf_header *", c) for c in self._cdata]
        self._next = 0  # the buffer the kernel hands over next: a first
        self._held: int | None = None
        self._held_gen = 0
        self.closed = False

    def _view_mapping(self, index: int) -> mmap.mmap:
        return mmap.mmap(self._fd, self.length, offset=index * self.length)

    @property
    def maps(self) -> tuple[mmap.mmap, ...]:
        """The kernel mappings of the two buffers (a, b): what BIOCSETZBUF registers."""
        return tuple(self._maps)

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
        self._held, self._held_gen = self._next, kernel_gen
        if length > self.length - HEADER_SIZE:
            name = "ab"[self._next]
            self.acknowledge()  # give it back: a bad buffer costs one error, not the stream
            raise from_errno(errno.EIO, "zero-copy buffer", cls=InternalError, hint=(
                f"bzh_kernel_len {length} of buffer {name} "
                f"exceeds its {self.length - HEADER_SIZE} data bytes; the buffer was "
                "given back unread"))
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
    def held(self) -> int | None:
        """The index of the buffer the process holds, or None."""
        return self._held

    @property
    def holding(self) -> bool:
        """True while the process holds a buffer it has not acknowledged."""
        return self._held is not None

    def view(self, index: int) -> mmap.mmap:
        """The view mapping of buffer ``index``: the same pages as the kernel's."""
        return self._views[index]

    def freeze(self, index: int) -> None:
        """Make the view mapping of buffer ``index`` a private copy of what it
        shows now, and map a fresh one for the next time the buffer is held.

        Called before the buffer is acknowledged, when views of it are still
        exported: they keep these bytes, whatever the kernel writes next.
        """
        frozen = self._views[index]
        freeze(frozen, self._fd, index * self.length)
        self._views[index] = self._view_mapping(index)
        with contextlib.suppress(BufferError):
            frozen.close()  # exported: unmapped when the last view goes

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
        for m in [*self._maps, *self._views]:
            # A live view keeps its mapping until it goes; the fd is closed, so that is safe.
            with contextlib.suppress(BufferError):
                m.close()
        self._maps = []
        self._views = []
        if self._fd >= 0:
            os.close(self._fd)  # the mappings keep the memory
            self._fd = -1
