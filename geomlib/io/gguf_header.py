"""Bounds-checked walk over a GGUF header, before gguf's reader (which trusts every count) parses it.

gguf's reader allocates per announced item, so a few forged header bytes (a
tensor count of 2**63, a 2**40-item array) could cost minutes and gigabytes:
:func:`scan_header` proves every count and length fits the file's remaining
bytes and geomlib's bounds first, in one pass that allocates nothing.
"""

from __future__ import annotations

import struct

# Bounds on what a GGUF header may announce.  gguf's reader trusts every count and length: it
# spends about 10 µs and 0.5 kB per metadata array item and 60 µs and 4 kB per tensor, so a
# few forged header bytes could cost minutes and gigabytes.  Real files stay far below these
# (a few thousand tensors, some 50 keys, vocabularies of at most 262k tokens: 0.8M array items).
_MAX_TENSORS = 1 << 16
_MAX_KEYS = 1 << 16
_MAX_ARRAY_ITEMS = 1 << 21  # all metadata arrays together
_MAX_NAME = 1 << 16  # bytes of one key or tensor name (llama.cpp itself allows 63 for tensors)
_MAX_DIMS = 8  # llama.cpp allows 4
_MAX_NESTING = 8  # arrays of arrays
#: GGUF value type -> bytes of one scalar; 8 is a string, 9 an array
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class BadHeader(Exception):
    """Why a GGUF header cannot be parsed within bounds (a clause for a message)."""


def scan_header(buf, size: int) -> None:
    """Walk a GGUF header without building anything, checking every count and length.

    Each count and length must fit in the bytes that remain in the file (and
    under the bounds above), so that gguf's reader, which trusts them, parses
    at most the file's real header.  Costs one ``struct`` call per key, tensor
    and string array item; numeric arrays are skipped whole.

    Raises
    ------
    BadHeader
        With the reason.
    """
    order = "<"

    def unpack(fmt: str, pos: int) -> tuple:
        if pos + struct.calcsize(fmt) > size:
            raise BadHeader(f"it ends at byte {size}, inside its header")
        return struct.unpack_from(order + fmt, buf, pos)

    def count(n: int, what: str, each: int, pos: int, cap: int) -> None:
        if n * each > size - pos:
            raise BadHeader(f"its header announces {n} {what} at byte {pos}, more than the {size - pos} "
                             "bytes after it can hold")
        if n > cap:
            raise BadHeader(f"its header announces {n} {what} at byte {pos}, more than the {cap} geomlib accepts")

    def name(pos: int, what: str) -> tuple[bytes, int]:
        (n,) = unpack("Q", pos)
        count(n, f"bytes of {what}", 1, pos + 8, _MAX_NAME)
        return bytes(buf[pos + 8 : pos + 8 + n]), pos + 8 + n

    items = 0

    def value(vtype: int, pos: int, depth: int) -> int:
        nonlocal items
        if vtype in _SCALAR_BYTES:
            unpack(f"{_SCALAR_BYTES[vtype]}s", pos)
            return pos + _SCALAR_BYTES[vtype]
        if vtype == _STRING:
            (n,) = unpack("Q", pos)
            count(n, "bytes of string", 1, pos + 8, size)
            return pos + 8 + n
        if vtype != _ARRAY:
            raise BadHeader(f"its header has a value of unknown type {vtype} at byte {pos}")
        if depth >= _MAX_NESTING:
            raise BadHeader(f"its header nests arrays more than {_MAX_NESTING} deep at byte {pos}")
        itype, n = unpack("IQ", pos)
        pos += 12
        # the smallest item: a scalar's bytes, a string's or array's length field
        each = _SCALAR_BYTES.get(itype, 12 if itype == _ARRAY else 8)
        count(n, "array items", each, pos, _MAX_ARRAY_ITEMS)
        items += n
        if items > _MAX_ARRAY_ITEMS:
            raise BadHeader(f"its metadata arrays hold more than the {_MAX_ARRAY_ITEMS} items geomlib accepts")
        if itype in _SCALAR_BYTES:
            return pos + n * each
        if itype == _STRING:  # the common bulky case (a vocabulary): no call per item
            q = struct.Struct(order + "Q")
            for _ in range(n):
                if pos + 8 > size:
                    raise BadHeader(f"it ends at byte {size}, inside its header")
                pos += 8 + q.unpack_from(buf, pos)[0]
            if pos > size:
                raise BadHeader(f"it ends at byte {size}, inside its header")
            return pos
        for _ in range(n):
            pos = value(itype, pos, depth + 1)
        return pos

    (version,) = unpack("I", 4)
    if version & 0xFFFF == 0:  # written on a machine of the other byte order, as gguf detects it
        order = ">"
        (version,) = unpack("I", 4)
    if version not in (2, 3):
        raise BadHeader(f"its version is {version}, where geomlib reads versions 2 and 3")
    n_tensors, n_keys = unpack("QQ", 8)
    pos = 24
    # counts first, against the smallest possible entries: 13 bytes a key, 24 a tensor
    count(n_keys, "metadata keys", 13, pos, _MAX_KEYS)
    count(n_tensors, "tensors", 24, pos, _MAX_TENSORS)
    def unique(pos: int, what: str, label: str, seen: set[bytes]) -> int:
        """The position after the name at ``pos``; a name already in ``seen`` is refused."""
        got, pos = name(pos, what)
        if got in seen:
            raise BadHeader(f"its header has the {label} {got.decode(errors='replace')!r} twice")
        seen.add(got)
        return pos

    keys: set[bytes] = set()
    for _ in range(n_keys):
        pos = unique(pos, "key", "key", keys)
        (vtype,) = unpack("I", pos)
        pos = value(vtype, pos + 4, 0)
    tensors: set[bytes] = set()
    for _ in range(n_tensors):
        pos = unique(pos, "tensor name", "tensor", tensors)
        (n_dims,) = unpack("I", pos)
        count(n_dims, "dimensions", 8, pos + 4, _MAX_DIMS)
        pos += 4 + 8 * n_dims
        unpack("IQ", pos)  # type and offset
        pos += 12
