"""Streaming (non-temporal) stores for outputs too large to stay in the last-level cache.

An ordinary store to a cache line that is not in cache first reads the line from memory (read-for-ownership),
only to overwrite all of it: writing a large Gram matrix that way doubles its memory traffic and evicts the
working set of the next tile. A streaming store writes a whole line to memory directly. The engines compute a
tile where it stays in cache, then copy it (and, in a symmetric Gram, its mirror) into the output here, when
`ntkdist.kernels.output_memory.streams_output` says the output is too large to stay cached for its reader.

Whole lines go by streaming stores, the partial lines at either end of a row (shared with a neighbouring tile) by
ordinary ones, so every byte is written once by one thread whatever the row's alignment; an SFENCE ends each
copy, since streaming stores are weakly ordered. The copies are exact (bytes moved, not values). On other than
x86-64 the same code uses ordinary stores.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# x86-64 only, where SFENCE orders them; elsewhere the copies use ordinary stores.
_STREAMS = platform.machine().lower() in ("x86_64", "amd64")
#: Bytes in a cache line: the unit a streaming store writes whole.
_LINE = 64


@intrinsic
def _copy_line(typingctx, target_address, source_address):
    """Copy the 64 bytes at ``source_address`` to ``target_address`` (64-byte aligned) by one streaming store."""
    if not all(isinstance(t, types.Integer) for t in (target_address, source_address)):
        return None
    sig = types.void(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        line = ir.VectorType(ir.IntType(64), _LINE // 8)
        value = builder.load(builder.inttoptr(args[1], line.as_pointer()), align=1)  # any source alignment
        store = builder.store(value, builder.inttoptr(args[0], line.as_pointer()), align=_LINE)
        if _STREAMS:
            store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):
    """SFENCE: streaming stores are weakly ordered; this makes them visible before any later store (the thread
    pool's hand-back), so that whoever reads the output after the tile's task returns sees them."""
    def codegen(context, builder, signature, args):
        if _STREAMS:
            fence = builder.module.declare_intrinsic("llvm.x86.sse.sfence", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fence, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def _stream_row(source, target):
    """target[:] = source (1-D, same dtype): the whole cache lines of ``target`` by streaming stores, the partial
    lines at either end (shared with a neighbouring tile's row) by ordinary ones. A row that is strided, or not
    aligned to its item size (a view into packed records), is copied by ordinary stores."""
    m = target.shape[0]
    size = target.itemsize
    address = target.ctypes.data
    source_address = source.ctypes.data
    if (target.strides[0] != size or source.strides[0] != size or address % size != 0
            or source_address % size != 0):
        for j in range(m):
            target[j] = source[j]
        return
    head = min(((-address) % _LINE) // size, m)
    per_line = _LINE // size
    lines = (m - head) // per_line
    for j in range(head):
        target[j] = source[j]
    start = head
    for _ in range(lines):
        _copy_line(address + start * size, source_address + start * size)
        start += per_line
    for j in range(start, m):
        target[j] = source[j]


@njit(nogil=True, cache=True)
def stream_into(source, target):
    """target[:] = source (2-D, same dtype, target rows anywhere in memory) by streaming stores.

    For tiles of outputs too large to stay cached: the values land in memory without the output's lines
    being read first, and the cache keeps the tile's inputs. Bit-for-bit the same result as an assignment.
    """
    for i in range(source.shape[0]):
        _stream_row(source[i], target[i])
    _store_fence()


@njit(nogil=True, cache=True)
def stream_tile(values, out, i0, j0, mirror, strip):
    """out[i0:, j0:] = values (a tile in the output's dtype, rows contiguous) and, with ``mirror``, its transpose
    at (j0, i0), by streaming stores; ``strip`` is an (8, ≥ rows) scratch of the same dtype."""
    n, m = values.shape
    stream_into(values, out[i0:i0 + n, j0:j0 + m])
    if mirror:
        stream_transposed_into(values, out[j0:j0 + m, i0:i0 + n], strip)


@njit(nogil=True, cache=True)
def stream_transposed_into(source, target, strip):
    """target[:] = source.T by streaming stores: 8 columns of ``source`` (cache-resident) at a time are transposed
    into ``strip`` (8 × n, in L1), whose rows are then streamed out whole."""
    n, m = source.shape
    for j0 in range(0, m, 8):
        width = min(8, m - j0)
        for i in range(n):
            for c in range(width):
                strip[c, i] = source[i, j0 + c]
        for c in range(width):
            _stream_row(strip[c, :n], target[j0 + c])
    _store_fence()
