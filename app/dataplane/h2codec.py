"""HTTP/2's server side as a codec (RFC 9113): bytes in -> events, calls -> bytes out; no I/O, no asyncio.

The LB's own, compiled with the hot path: with the pure-Python h2 library, framing, stream states, header
checks and HPACK cost more per request than nginx's whole request. It holds the protocol's rules (frame
sizes, stream states, flow control both ways, what makes a request malformed) and nothing of proxying;
http2.py drives it. A connection error raises H2ProtocolError with its GOAWAY already queued; a stream
error resets that stream and says so with a REFUSED event.
"""

from __future__ import annotations

from typing import Final

from app.dataplane.hpack import Decoder, Encoder, HpackError

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6

DEFAULT_WINDOW: Final = 65535
MAX_WINDOW: Final = (1 << 31) - 1
FRAME_SIZE: Final = 16384  # the largest frame we take (the protocol's default; we never raise it)

# Event kinds
REQUEST: Final = 1  # a request's header block: headers (None when larger than allowed), end
BODY: Final = 2  # request body bytes: data, flow (flow-controlled length, padding included)
ENDED: Final = 3  # the client ended its side of the stream
WINDOW: Final = 4  # our send window grew (stream_id 0: the connection's)
RESET: Final = 5  # the client reset the stream
PINGED: Final = 6
SETTINGS_CHANGED: Final = 7
GONE: Final = 8  # GOAWAY from the client
REFUSED: Final = 9  # we reset a stream for a stream error (a malformed request, too many streams)
IDLE_FRAME: Final = 10  # a frame that asks nothing: empty DATA, PRIORITY, an unknown type (flood count)

CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# Token characters in lower case (RFC 9110 5.6.2): anything else in a name makes a request malformed.
NAME_CHARS: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"


class H2ProtocolError(Exception):
    """A connection error: the GOAWAY carrying `code` is queued; close after sending it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2Event:
    """One thing the client did; which fields matter depends on `kind`."""

    __slots__ = ("data", "end", "flow", "headers", "kind", "stream_id")

    def __init__(
        self,
        kind: int,
        stream_id: int,
        headers: list[tuple[bytes, bytes]] | None = None,
        data: bytes = b"",
        flow: int = 0,
        end: bool = False,
    ) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.headers = headers
        self.data = data
        self.flow = flow
        self.end = end


class _Stream:
    """One open stream's protocol state."""

    __slots__ = (
        "expected",
        "local_closed",
        "received",
        "recv_unacked",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int) -> None:
        self.send_window = send_window
        self.recv_window = DEFAULT_WINDOW
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.expected = -1  # content-length, when the request gave one
        self.received = 0


class ServerCodec:
    """One HTTP/2 server connection's protocol state; feed it with receive_data, send data_to_send()."""

    def __init__(
        self, *, max_streams: int, max_header_list: int, connection_window: int = DEFAULT_WINDOW
    ) -> None:
        self.max_streams = max_streams
        self.max_header_list = max_header_list
        # A header block (HEADERS and its CONTINUATIONs) larger than this is a flood, not a request.
        self.max_header_block = max(2 * max_header_list, 16384)
        self.connection_window = connection_window
        self.streams: dict[int, _Stream] = {}
        self.highest_inbound_stream_id = 0
        self.max_outbound_frame_size = FRAME_SIZE
        self.closed = False  # GOAWAY sent: no new streams
        self._decoder = Decoder()
        self._encoder = Encoder()
        self._out: list[bytes] = []
        self._buf = b""
        self._preface = False
        self._settings_seen = False
        self._peer_window = DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self._send_window = DEFAULT_WINDOW  # the connection's send window
        self._recv_window = DEFAULT_WINDOW  # the connection's receive window
        self._recv_unacked = 0
        self._block_stream = 0  # a header block is open on this stream (CONTINUATION expected)
        self._block: list[bytes] = []
        self._block_size = 0
        self._block_end_stream = False

    # -- setting up and winding down ------------------------------------------------------------------

    def initiate_connection(self) -> None:
        """Our SETTINGS, and a connection receive window opened to `connection_window`."""
        settings = (
            (MAX_CONCURRENT_STREAMS, self.max_streams),
            (MAX_HEADER_LIST_SIZE, self.max_header_list),
            (INITIAL_WINDOW_SIZE, DEFAULT_WINDOW),
            (ENABLE_PUSH, 0),
        )
        payload = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in settings)
        self._frame(SETTINGS, 0, 0, payload)
        grow = self.connection_window - DEFAULT_WINDOW
        if grow > 0:
            self._recv_window += grow
            self._frame(WINDOW_UPDATE, 0, 0, grow.to_bytes(4, "big"))

    def close_connection(self, code: int = NO_ERROR) -> None:
        """GOAWAY with `code`; streams up to the highest seen may finish, no new ones are taken."""
        if not self.closed:
            self.closed = True
            payload = self.highest_inbound_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big")
            self._frame(GOAWAY, 0, 0, payload)

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one piece."""
        if not self._out:
            return b""
        out = self._out
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    # -- sending ------------------------------------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """A response's header block (HEADERS, then CONTINUATION if it is larger than a frame)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        block = self._encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self._frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:size])
            for start in range(size, len(block), size):
                last = start + size >= len(block)
                self._frame(CONTINUATION, END_HEADERS if last else 0, stream_id, block[start : start + size])
        if end_stream:
            self._end_local(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """One DATA frame; the caller keeps it within local_flow_control_window and the frame size."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        size = len(data)
        stream.send_window -= size
        self._send_window -= size
        self._frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            self._end_local(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM on an empty DATA frame."""
        self.send_data(stream_id, b"", True)

    def reset_stream(self, stream_id: int, code: int) -> None:
        """RST_STREAM; frames the client sent before it learns of it are then ignored."""
        if self.streams.pop(stream_id, None) is not None:
            self._frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many DATA bytes may go out on the stream now."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return 0
        return min(stream.send_window, self._send_window)

    def acknowledge_received_data(self, size: int, stream_id: int) -> None:
        """`size` bytes of the stream's DATA were taken: the client may send as much again.

        WINDOW_UPDATE goes once half a window is taken, not per frame.
        """
        self._recv_unacked += size
        if self._recv_unacked >= self.connection_window // 2:
            grow, self._recv_unacked = self._recv_unacked, 0
            self._recv_window += grow
            self._frame(WINDOW_UPDATE, 0, 0, grow.to_bytes(4, "big"))
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            stream.recv_unacked += size
            if stream.recv_unacked >= DEFAULT_WINDOW // 2:
                grow, stream.recv_unacked = stream.recv_unacked, 0
                stream.recv_window += grow
                self._frame(WINDOW_UPDATE, 0, stream_id, grow.to_bytes(4, "big"))

    def _end_local(self, stream_id: int, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream_id]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._out.append(
            bytes((size >> 16, (size >> 8) & 0xFF, size & 0xFF, kind, flags)) + stream_id.to_bytes(4, "big")
        )
        if size:
            self._out.append(payload)

    # -- receiving ------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[H2Event]:
        """The events in `data` (and in what an earlier call left unfinished)."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        events: list[H2Event] = []
        pos = 0
        end = len(data)
        if not self._preface:
            if end < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise self._error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buf = data
                return events
            if not data.startswith(PREFACE):
                raise self._error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = True
            pos = len(PREFACE)
        while end - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > FRAME_SIZE:
                raise self._error(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {FRAME_SIZE})")
            if end - pos - 9 < length:
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if not self._settings_seen:
                if kind != SETTINGS or flags & ACK:
                    raise self._error(PROTOCOL_ERROR, "the first frame is not SETTINGS")
                self._settings_seen = True
            if self._block_stream and (kind != CONTINUATION or stream_id != self._block_stream):
                raise self._error(PROTOCOL_ERROR, "a header block interrupted")
            if kind == DATA:
                self._on_data(events, flags, stream_id, payload)
            elif kind == HEADERS:
                self._on_headers(events, flags, stream_id, payload)
            elif kind == CONTINUATION:
                self._on_continuation(events, flags, stream_id, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(events, stream_id, payload)
            elif kind == RST_STREAM:
                self._on_rst_stream(events, stream_id, payload)
            elif kind == SETTINGS:
                self._on_settings(events, flags, stream_id, payload)
            elif kind == PING:
                self._on_ping(events, flags, stream_id, payload)
            elif kind == PRIORITY:
                if stream_id == 0:
                    raise self._error(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    self._stream_error(events, stream_id, FRAME_SIZE_ERROR)
                else:
                    events.append(H2Event(IDLE_FRAME, stream_id))
            elif kind == GOAWAY:
                if stream_id != 0:
                    raise self._error(PROTOCOL_ERROR, "GOAWAY on a stream")
                events.append(H2Event(GONE, 0))
            elif kind == PUSH_PROMISE:
                raise self._error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            else:  # unknown frame types are ignored (RFC 9113 5.5)
                events.append(H2Event(IDLE_FRAME, stream_id))
        if pos < end:
            self._buf = data[pos:]
        return events

    def _error(self, code: int, message: str) -> H2ProtocolError:
        self.close_connection(code)
        return H2ProtocolError(code, message)

    def _stream_error(self, events: list[H2Event], stream_id: int, code: int) -> None:
        self.streams.pop(stream_id, None)
        self._frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))
        events.append(H2Event(REFUSED, stream_id))

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload:
                raise self._error(FRAME_SIZE_ERROR, "a padded frame without its pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise self._error(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _on_data(self, events: list[H2Event], flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise self._error(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flow > self._recv_window:
            raise self._error(FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self._recv_window -= flow
        data = self._unpad(flags, payload)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self.highest_inbound_stream_id:
                raise self._error(PROTOCOL_ERROR, "DATA on an idle stream")
            # A stream closed here (reset, or answered): its bytes only return the connection's window.
            self.acknowledge_received_data(flow, 0)
            if stream is not None:
                self._stream_error(events, stream_id, STREAM_CLOSED)
            return
        if flow > stream.recv_window:
            self.acknowledge_received_data(flow, 0)
            self._stream_error(events, stream_id, FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= flow
        stream.received += len(data)
        end = bool(flags & END_STREAM)
        if stream.expected >= 0 and (
            stream.received > stream.expected or (end and stream.received != stream.expected)
        ):
            self.acknowledge_received_data(flow, 0)
            self._stream_error(events, stream_id, PROTOCOL_ERROR)  # body and content-length disagree
            return
        if flow:
            events.append(H2Event(BODY, stream_id, None, data, flow))
        elif not end:
            events.append(H2Event(IDLE_FRAME, stream_id))
        if end:
            self._end_remote(events, stream_id, stream)

    def _end_remote(self, events: list[H2Event], stream_id: int, stream: _Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            del self.streams[stream_id]
        events.append(H2Event(ENDED, stream_id))

    def _on_headers(self, events: list[H2Event], flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise self._error(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise self._error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if int.from_bytes(block[:4], "big") & 0x7FFFFFFF == stream_id:
                self._stream_error(events, stream_id, PROTOCOL_ERROR)  # depends on itself
                # Its block is still decoded (the dynamic table is the connection's), then dropped.
                self.highest_inbound_stream_id = max(self.highest_inbound_stream_id, stream_id)
            block = block[5:]
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._on_block(events, stream_id, block, end_stream)
            return
        self._block_stream = stream_id
        self._block = [block]
        self._block_size = len(block)
        self._block_end_stream = end_stream

    def _on_continuation(self, events: list[H2Event], flags: int, stream_id: int, payload: bytes) -> None:
        if not self._block_stream:
            raise self._error(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block.append(payload)
        self._block_size += len(payload)
        if self._block_size > self.max_header_block:
            raise self._error(ENHANCE_YOUR_CALM, f"a header block over {self.max_header_block} bytes")
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block_stream = 0
            self._block = []
            self._on_block(events, stream_id, block, self._block_end_stream)

    def _on_block(self, events: list[H2Event], stream_id: int, block: bytes, end_stream: bool) -> None:
        """A whole header block: a new request, trailers, or one to decode and drop."""
        try:
            fields, oversized = self._decoder.decode(block, self.max_header_list)
        except HpackError as exc:
            raise self._error(COMPRESSION_ERROR, str(exc)) from None
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers: they end the request, carry no pseudo-header; dropped
            if stream.remote_closed or not end_stream:
                self._stream_error(events, stream_id, PROTOCOL_ERROR)
            elif any(name[:1] == b":" for name, _ in fields):
                self._stream_error(events, stream_id, PROTOCOL_ERROR)
            else:
                self._end_remote(events, stream_id, stream)
            return
        if stream_id <= self.highest_inbound_stream_id:
            return  # on a stream closed here (e.g. reset): decoded for the table, then dropped
        if not stream_id & 1:
            raise self._error(PROTOCOL_ERROR, "a client stream with an even id")
        self.highest_inbound_stream_id = stream_id
        if self.closed:
            return  # after our GOAWAY: not taken
        if len(self.streams) >= self.max_streams:
            self._stream_error(events, stream_id, REFUSED_STREAM)
            return
        stream = _Stream(self._peer_window)
        if not oversized:
            expected = check_request(fields)
            if expected < -1:
                self._stream_error(events, stream_id, PROTOCOL_ERROR)  # a malformed request
                return
            stream.expected = expected
            if end_stream and expected > 0:
                self._stream_error(events, stream_id, PROTOCOL_ERROR)
                return
        self.streams[stream_id] = stream
        events.append(H2Event(REQUEST, stream_id, None if oversized else fields, b"", 0, end_stream))
        if end_stream:
            self._end_remote(events, stream_id, stream)

    def _on_window_update(self, events: list[H2Event], stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise self._error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
        grow = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if grow == 0:
                raise self._error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += grow
            if self._send_window > MAX_WINDOW:
                raise self._error(FLOW_CONTROL_ERROR, "the connection's window above 2^31-1")
            events.append(H2Event(WINDOW, 0))
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.highest_inbound_stream_id:
                raise self._error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return  # closed here meanwhile
        if grow == 0:
            self._stream_error(events, stream_id, PROTOCOL_ERROR)
            return
        stream.send_window += grow
        if stream.send_window > MAX_WINDOW:
            self._stream_error(events, stream_id, FLOW_CONTROL_ERROR)
            return
        events.append(H2Event(WINDOW, stream_id))

    def _on_rst_stream(self, events: list[H2Event], stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise self._error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise self._error(FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        if stream_id > self.highest_inbound_stream_id:
            raise self._error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        self.streams.pop(stream_id, None)
        events.append(H2Event(RESET, stream_id))  # also on a stream closed here: a flood counts them all

    def _on_settings(self, events: list[H2Event], flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise self._error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise self._error(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise self._error(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for start in range(0, len(payload), 6):
            key = (payload[start] << 8) | payload[start + 1]
            value = int.from_bytes(payload[start + 2 : start + 6], "big")
            if key == HEADER_TABLE_SIZE:
                self._encoder.table_size_changed()
            elif key == ENABLE_PUSH and value > 1:
                raise self._error(PROTOCOL_ERROR, "ENABLE_PUSH neither 0 nor 1")
            elif key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise self._error(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise self._error(FLOW_CONTROL_ERROR, "a stream's window above 2^31-1")
                if delta > 0:
                    events.append(H2Event(WINDOW, 0))
            elif key == MAX_FRAME_SIZE:
                if not FRAME_SIZE <= value <= 16777215:
                    raise self._error(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.max_outbound_frame_size = value
        self._frame(SETTINGS, ACK, 0, b"")
        events.append(H2Event(SETTINGS_CHANGED, 0))

    def _on_ping(self, events: list[H2Event], flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise self._error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise self._error(FRAME_SIZE_ERROR, "PING not of 8 bytes")
        if not flags & ACK:
            self._frame(PING, ACK, 0, payload)
            events.append(H2Event(PINGED, 0))


def check_request(fields: list[tuple[bytes, bytes]]) -> int:
    """The request's content-length (-1 if none), or -2 if the request is malformed (RFC 9113 8.1.1).

    Lower-case token names; pseudo-headers first, known, once each, :method :scheme :path present
    (only :method and :authority on a CONNECT); no connection-specific field; te only "trailers"; no
    NUL, CR or LF in a value; content-length digits, one value.
    """
    method: bytes | None = None
    scheme: bytes | None = None
    path: bytes | None = None
    authority: bytes | None = None
    regular = False
    length = -1
    good = _GOOD_NAMES
    for name, value in fields:
        if b"\x00" in value or b"\r" in value or b"\n" in value or not name:
            return -2
        if name[0] == 58:  # ":"
            if regular:
                return -2
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            else:
                return -2  # unknown, or twice
            continue
        regular = True
        if name in good:
            continue
        if name.translate(None, NAME_CHARS) or name in CONNECTION_SPECIFIC:
            return -2
        if name == b"te":
            if value != b"trailers":
                return -2
        elif name == b"content-length":
            if not value.isdigit() or (length >= 0 and int(value) != length):
                return -2
            length = int(value)
        elif len(good) < _GOOD_NAMES_SIZE:
            good.add(name)
    if method is None:
        return -2
    if method == b"CONNECT":
        if scheme is not None or path is not None or authority is None:
            return -2
    elif scheme is None or not path:
        return -2
    return length


# Field names already found to be plain tokens (whose values need no check of their own): most requests
# repeat the same few dozen, so each is checked once. Bounded.
_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_SIZE = 1024
