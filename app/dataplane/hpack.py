"""HPACK (RFC 7541) for the LB's HTTP/2 side: request header blocks in, response header blocks out.

Compiled with the hot path: the pure-Python hpack library cost this machine more per request than nginx's
whole request. The encoder never adds to the client's dynamic table (literals without indexing, names
from the static table, no Huffman), so only the decoder keeps a table.
"""

from __future__ import annotations

MAX_INT = 1 << 32  # no field, size or index of ours comes near it: a larger integer is an attack
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is len(name) + len(value) + 32


class HpackError(Exception):
    """A header block that cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class Decoder:
    """Decodes the header blocks of one connection, in order (they share its dynamic table)."""

    def __init__(self, max_table_size: int = 4096) -> None:
        self.limit = max_table_size  # what our SETTINGS_HEADER_TABLE_SIZE allows
        self.max_size = max_table_size  # the size the client's encoder last set (<= limit)
        self.size = 0
        self.table: list[tuple[bytes, bytes]] = []  # newest last

    def decode(self, data: bytes, max_list: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The fields of one block, and whether their list is larger than `max_list` (then not all kept).

        The whole block is always decoded, so the dynamic table stays in step with the client's.
        """
        fields: list[tuple[bytes, bytes]] = []
        list_size = 0
        oversized = False
        pos = 0
        end = len(data)
        first = True
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # indexed field
                index, pos = decode_int(data, pos, 7)
                name, value = self.entry(index)
            elif byte & 0x40:  # literal, added to the table
                name, value, pos = self._literal(data, pos, 6)
                self._add(name, value)
            elif byte & 0x20:  # dynamic table size update: only before the first field
                if not first:
                    raise HpackError("table size update after a field")
                size, pos = decode_int(data, pos, 5)
                if size > self.limit:
                    raise HpackError(f"table size {size} above the {self.limit} allowed")
                self.max_size = size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                name, value, pos = self._literal(data, pos, 4)
            first = False
            list_size += len(name) + len(value) + _ENTRY_OVERHEAD
            if list_size > max_list:
                oversized = True
            else:
                fields.append((name, value))
        return fields, oversized

    def entry(self, index: int) -> tuple[bytes, bytes]:
        """The field at `index` (1-based: the static table, then the dynamic one, newest first)."""
        if 0 < index <= 61:
            return STATIC_TABLE[index - 1]
        position = len(self.table) - (index - 61)
        if index <= 0 or position < 0:
            raise HpackError(f"index {index} outside the tables")
        return self.table[position]

    def _literal(self, data: bytes, pos: int, prefix: int) -> tuple[bytes, bytes, int]:
        index, pos = decode_int(data, pos, prefix)
        if index:
            name = self.entry(index)[0]
        else:
            name, pos = decode_string(data, pos)
        value, pos = decode_string(data, pos)
        return name, value, pos

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD
        if size > self.max_size:  # larger than the whole table: it empties it (RFC 7541 4.4)
            self.table.clear()
            self.size = 0
            return
        self.table.append((name, value))
        self.size += size
        self._evict()

    def _evict(self) -> None:
        table = self.table
        while self.size > self.max_size:
            name, value = table.pop(0)
            self.size -= len(name) + len(value) + _ENTRY_OVERHEAD


def decode_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix at data[pos] (RFC 7541 5.1), and the position after it."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HpackError("integer cut short")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if value > MAX_INT:
            raise HpackError("integer too large")
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal at data[pos] (RFC 7541 5.2), Huffman-coded or not, and the position after it."""
    if pos >= len(data):
        raise HpackError("string cut short")
    huffman = data[pos] & 0x80
    length, pos = decode_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("string longer than its block")
    raw = data[pos:end]
    return (huffman_decode(raw) if huffman else raw), end


class Encoder:
    """Encodes response header blocks without touching the client's dynamic table."""

    def __init__(self) -> None:
        self.size_update = False

    def table_size_changed(self) -> None:
        """The client set SETTINGS_HEADER_TABLE_SIZE: the next block starts with a size update (to 0,
        always within its limit), which some decoders wait for."""
        self.size_update = True

    def encode(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        """One header block; names must be lower-case."""
        parts: list[bytes] = []
        if self.size_update:
            self.size_update = False
            parts.append(b"\x20")
        cache = _ENCODED
        for field in fields:
            piece = cache.get(field)
            if piece is None:
                piece = encode_field(field[0], field[1])
                if len(field[1]) <= _CACHED_VALUE:
                    if len(cache) >= _CACHE_SIZE:
                        cache.clear()
                    cache[field] = piece
            parts.append(piece)
        return b"".join(parts)


# Responses repeat most of their fields (server, content-type, a date for a whole second): each field's
# encoding is kept, as it never depends on a connection (no dynamic table). Short values only, a bounded
# number of them.
_ENCODED: dict[tuple[bytes, bytes], bytes] = {}
_CACHED_VALUE = 64
_CACHE_SIZE = 1024


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: a whole static entry, or a literal without indexing (the name from the static table
    when it is there), no Huffman."""
    index = _STATIC_FIELDS.get((name, value), 0)
    if index:
        return encode_int(index, 7, 0x80)
    index = _STATIC_NAMES.get(name, 0)
    if index:
        return encode_int(index, 4, 0x00) + encode_int(len(value), 7, 0x00) + value
    return b"\x00" + encode_int(len(name), 7, 0x00) + name + encode_int(len(value), 7, 0x00) + value


def encode_int(value: int, prefix: int, flags: int) -> bytes:
    """`value` with an N-bit prefix, the first byte's other bits set to `flags`."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def huffman_decode(data: bytes) -> bytes:
    """Huffman-coded bytes (RFC 7541 5.2), four bits at a time through a table of the code's tree."""
    out = bytearray()
    table = _TRANSITIONS
    state = 0
    for byte in data:
        step = table[(state << 4) | (byte >> 4)]
        if step & _FAIL:
            raise HpackError("invalid Huffman code")
        if step & _EMIT:
            out.append((step >> 10) & 0xFF)
        state = step & 0x1FF
        step = table[(state << 4) | (byte & 0x0F)]
        if step & _FAIL:
            raise HpackError("invalid Huffman code")
        if step & _EMIT:
            out.append((step >> 10) & 0xFF)
        state = step & 0x1FF
    if not _ACCEPTING[state]:
        raise HpackError("invalid Huffman padding")
    return bytes(out)


_EMIT = 1 << 9
_UNSET = -1000
_FAIL = 1 << 18


def _build_transitions() -> tuple[list[int], list[bool]]:
    """The decoding table: for each inner node of the code's tree and each 4-bit group, the node reached
    (bits 0-8), whether a symbol ends on the way (bit 9) and which (bits 10-17), or a failure (bit 18):
    the EOS symbol, or a path no code takes. The shortest code has 5 bits, so at most one symbol ends in
    a group. A node accepts the end of a string if its path is all ones and shorter than 8 bits."""
    children: list[list[int]] = [[_UNSET, _UNSET]]  # inner nodes; a child < 0 is -(symbol + 1)
    depth = [0]
    ones = [True]
    for symbol, item in enumerate(_CODE_TABLE.split()):
        hex_code, _, bits = item.partition(":")
        code, length = int(hex_code, 16), int(bits)
        node = 0
        for i in range(length - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = -(symbol + 1)
            else:
                if children[node][bit] == _UNSET:
                    children.append([_UNSET, _UNSET])
                    depth.append(depth[node] + 1)
                    ones.append(ones[node] and bit == 1)
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    transitions: list[int] = []
    for start in range(len(children)):
        for group in range(16):
            node = start
            step = 0
            for i in range(3, -1, -1):
                child = children[node][(group >> i) & 1]
                if child == _UNSET:
                    step = _FAIL
                    break
                if child >= 0:
                    node = child
                    continue
                symbol = -child - 1
                if symbol == 256:
                    step = _FAIL
                    break
                step = _EMIT | (symbol << 10)
                node = 0
            transitions.append(step | node if not step & _FAIL else _FAIL)
    accepting = [ones[n] and depth[n] < 8 for n in range(len(children))]
    return transitions, accepting


# Each symbol's code (hex) and its length in bits, symbols 0-255 then EOS: RFC 7541 Appendix B.
# One string, not a tuple of ints: a long literal of ints compiles to a very long C function.
_CODE_TABLE = """
    1ff8:13 7fffd8:23 fffffe2:28 fffffe3:28 fffffe4:28 fffffe5:28 fffffe6:28 fffffe7:28 fffffe8:28
    ffffea:24 3ffffffc:30 fffffe9:28 fffffea:28 3ffffffd:30 fffffeb:28 fffffec:28 fffffed:28 fffffee:28
    fffffef:28 ffffff0:28 ffffff1:28 ffffff2:28 3ffffffe:30 ffffff3:28 ffffff4:28 ffffff5:28 ffffff6:28
    ffffff7:28 ffffff8:28 ffffff9:28 ffffffa:28 ffffffb:28 14:6 3f8:10 3f9:10 ffa:12 1ff9:13 15:6 f8:8
    7fa:11 3fa:10 3fb:10 f9:8 7fb:11 fa:8 16:6 17:6 18:6 0:5 1:5 2:5 19:6 1a:6 1b:6 1c:6 1d:6 1e:6 1f:6
    5c:7 fb:8 7ffc:15 20:6 ffb:12 3fc:10 1ffa:13 21:6 5d:7 5e:7 5f:7 60:7 61:7 62:7 63:7 64:7 65:7 66:7
    67:7 68:7 69:7 6a:7 6b:7 6c:7 6d:7 6e:7 6f:7 70:7 71:7 72:7 fc:8 73:7 fd:8 1ffb:13 7fff0:19 1ffc:13
    3ffc:14 22:6 7ffd:15 3:5 23:6 4:5 24:6 5:5 25:6 26:6 27:6 6:5 74:7 75:7 28:6 29:6 2a:6 7:5 2b:6 76:7
    2c:6 8:5 9:5 2d:6 77:7 78:7 79:7 7a:7 7b:7 7ffe:15 7fc:11 3ffd:14 1ffd:13 ffffffc:28 fffe6:20
    3fffd2:22 fffe7:20 fffe8:20 3fffd3:22 3fffd4:22 3fffd5:22 7fffd9:23 3fffd6:22 7fffda:23 7fffdb:23
    7fffdc:23 7fffdd:23 7fffde:23 ffffeb:24 7fffdf:23 ffffec:24 ffffed:24 3fffd7:22 7fffe0:23 ffffee:24
    7fffe1:23 7fffe2:23 7fffe3:23 7fffe4:23 1fffdc:21 3fffd8:22 7fffe5:23 3fffd9:22 7fffe6:23 7fffe7:23
    ffffef:24 3fffda:22 1fffdd:21 fffe9:20 3fffdb:22 3fffdc:22 7fffe8:23 7fffe9:23 1fffde:21 7fffea:23
    3fffdd:22 3fffde:22 fffff0:24 1fffdf:21 3fffdf:22 7fffeb:23 7fffec:23 1fffe0:21 1fffe1:21 3fffe0:22
    1fffe2:21 7fffed:23 3fffe1:22 7fffee:23 7fffef:23 fffea:20 3fffe2:22 3fffe3:22 3fffe4:22 7ffff0:23
    3fffe5:22 3fffe6:22 7ffff1:23 3ffffe0:26 3ffffe1:26 fffeb:20 7fff1:19 3fffe7:22 7ffff2:23 3fffe8:22
    1ffffec:25 3ffffe2:26 3ffffe3:26 3ffffe4:26 7ffffde:27 7ffffdf:27 3ffffe5:26 fffff1:24 1ffffed:25
    7fff2:19 1fffe3:21 3ffffe6:26 7ffffe0:27 7ffffe1:27 3ffffe7:26 7ffffe2:27 fffff2:24 1fffe4:21
    1fffe5:21 3ffffe8:26 3ffffe9:26 ffffffd:28 7ffffe3:27 7ffffe4:27 7ffffe5:27 fffec:20 fffff3:24
    fffed:20 1fffe6:21 3fffe9:22 1fffe7:21 1fffe8:21 7ffff3:23 3fffea:22 3fffeb:22 1ffffee:25 1ffffef:25
    fffff4:24 fffff5:24 3ffffea:26 7ffff4:23 3ffffeb:26 7ffffe6:27 3ffffec:26 3ffffed:26 7ffffe7:27
    7ffffe8:27 7ffffe9:27 7ffffea:27 7ffffeb:27 ffffffe:28 7ffffec:27 7ffffed:27 7ffffee:27 7ffffef:27
    7fffff0:27 3ffffee:26 3fffffff:30
"""

# RFC 7541 Appendix A: "name value" per line (a value may hold spaces, a name never does).
_STATIC_TEXT = """
:authority
:method GET
:method POST
:path /
:path /index.html
:scheme http
:scheme https
:status 200
:status 204
:status 206
:status 304
:status 400
:status 404
:status 500
accept-charset
accept-encoding gzip, deflate
accept-language
accept-ranges
accept
access-control-allow-origin
age
allow
authorization
cache-control
content-disposition
content-encoding
content-language
content-length
content-location
content-range
content-type
cookie
date
etag
expect
expires
from
host
if-match
if-modified-since
if-none-match
if-range
if-unmodified-since
last-modified
link
location
max-forwards
proxy-authenticate
proxy-authorization
range
referer
refresh
retry-after
server
set-cookie
strict-transport-security
transfer-encoding
user-agent
vary
via
www-authenticate
"""
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple(
    (name.encode(), value.encode())
    for name, _, value in (line.partition(" ") for line in _STATIC_TEXT.strip().splitlines())
)

_STATIC_FIELDS = {field: i + 1 for i, field in reversed(list(enumerate(STATIC_TABLE)))}
_STATIC_NAMES = {name: i + 1 for i, (name, _) in reversed(list(enumerate(STATIC_TABLE)))}
_TRANSITIONS, _ACCEPTING = _build_transitions()
