"""The HTTP/2 server codec against a real client state machine (the h2 library) and hand-made frames."""

from __future__ import annotations

import random

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from app.dataplane import h2codec as c
from app.dataplane.h2codec import H2Event, H2ProtocolError, ServerCodec
from app.dataplane.hpack import encode_int

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/home"), (b":authority", b"lb")]


class Pair:
    """Our server codec and an h2 client, wired back to back in memory."""

    def __init__(self, max_streams: int = 100, max_header_list: int = 16384) -> None:
        self.server = ServerCodec(
            max_streams=max_streams, max_header_list=max_header_list, connection_window=1 << 20
        )
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.server.initiate_connection()
        self.client.initiate_connection()
        self.encoder = hpack.Encoder()  # for hand-made HEADERS (after the client's own, not mixed)
        self.to_server()
        self.to_client()

    def to_server(self, extra: bytes = b"") -> list[H2Event]:
        return self.server.receive_data(self.client.data_to_send() + extra)

    def to_client(self) -> list[h2.events.Event]:
        events = self.client.receive_data(self.server.data_to_send())
        self.client.data_to_send()  # acknowledgements the server does not need here
        return list(events)

    def raw(self, *frames: Frame | bytes) -> list[H2Event]:
        return self.server.receive_data(
            b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        )

    def sent_frames(self) -> list[Frame]:
        """The frames the server queued, parsed by hyperframe."""
        data = self.server.data_to_send()
        frames = []
        while data:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            frame.parse_body(memoryview(data[9 : 9 + length]))
            frames.append(frame)
            data = data[9 + length :]
        return frames


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as bytes, for the ones hyperframe refuses to build."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def with_client_setting(code: int, value: int) -> Pair:
    """A pair whose client changed one setting (acknowledged) and has a GET open on stream 1."""
    pair = Pair()
    pair.client.update_settings({code: value})
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.to_client()
    return pair


def kinds(events: list[H2Event]) -> list[int]:
    return [event.kind for event in events]


def test_a_get_and_its_response_round_trip() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    events = pair.to_server()
    assert kinds(events) == [c.REQUEST, c.ENDED]
    assert events[0].headers == GET and events[0].end
    pair.server.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")], False)
    pair.server.send_data(1, b"hello", True)
    got = pair.to_client()
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert [e.data for e in got if isinstance(e, h2.events.DataReceived)] == [b"hello"]
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)
    assert pair.server.streams == {}  # both sides ended: forgotten


def test_a_body_arrives_with_its_flow_controlled_length_and_the_window_reopens() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:], (b"content-length", b"40000")])
    pair.client.send_data(1, b"a" * 16000)
    pair.client.send_data(1, b"b" * 16000)
    pair.client.send_data(1, b"c" * 8000, end_stream=True)
    events = pair.to_server()
    assert kinds(events) == [c.REQUEST, c.BODY, c.BODY, c.BODY, c.ENDED]
    assert not events[0].end and sum(e.flow for e in events[1:4]) == 40000
    pair.server.acknowledge_received_data(20000, 1)  # below half a window: nothing yet
    assert pair.server.data_to_send() == b""
    pair.server.acknowledge_received_data(20000, 1)
    updates = [f for f in pair.sent_frames() if isinstance(f, WindowUpdateFrame)]
    # The stream has ended (no update for it); the connection's window (1 MiB) is not half used.
    assert updates == []


def test_window_updates_go_once_half_a_window_is_taken() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.client.send_data(1, b"x" * 16384)
    pair.client.send_data(1, b"x" * 16384)
    pair.to_server()
    pair.server.acknowledge_received_data(16384, 1)
    assert pair.server.data_to_send() == b""
    pair.server.acknowledge_received_data(16384, 1)
    (update,) = pair.sent_frames()
    assert isinstance(update, WindowUpdateFrame) and update.stream_id == 1
    assert update.window_increment == 32768


def test_data_beyond_the_streams_window_resets_it() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.to_server()
    frames = [DataFrame(1, data=b"x" * 16384) for _ in range(5)]  # 81,920 > 65,535
    events = pair.raw(*frames)
    assert kinds(events)[-1] == c.REFUSED
    (reset,) = [f for f in pair.sent_frames() if isinstance(f, RstStreamFrame)]
    assert reset.error_code == c.FLOW_CONTROL_ERROR


def test_the_send_window_bounds_data_and_a_window_update_reopens_it() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    assert pair.server.local_flow_control_window(1) == 65535
    pair.server.send_headers(1, [(b":status", b"200")], False)
    for _ in range(4):
        pair.server.send_data(1, b"x" * 16383, False)
    pair.server.send_data(1, b"x" * 3, False)
    assert pair.server.local_flow_control_window(1) == 0
    for event in pair.to_client():
        if isinstance(event, h2.events.DataReceived):
            pair.client.acknowledge_received_data(event.flow_controlled_length, 1)
    events = pair.to_server()
    assert c.WINDOW in kinds(events)
    assert pair.server.local_flow_control_window(1) > 0


def test_the_clients_initial_window_setting_moves_open_streams() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    events = pair.to_server()
    assert c.SETTINGS_CHANGED in kinds(events)
    assert pair.server.local_flow_control_window(1) == 100


MALFORMED = {
    "upper-case name": [*GET, (b"X-Up", b"1")],
    "connection-specific": [*GET, (b"connection", b"close")],
    "te not trailers": [*GET, (b"te", b"gzip")],
    "no :path": [f for f in GET if f[0] != b":path"],
    "empty :path": [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"")],
    "pseudo after regular": [(b":method", b"GET"), (b"x-a", b"1"), (b":scheme", b"https"), (b":path", b"/")],
    "pseudo twice": [*GET, (b":method", b"GET")][:2] + GET[1:] + [(b":method", b"POST")],
    "unknown pseudo": [*GET, (b":status", b"200")],
    "CR and LF in a value": [*GET, (b"x-a", b"1\r\n2")],
    "CR in a value": [*GET, (b"x-a", b"1\r2")],
    "LF in a value": [*GET, (b"x-a", b"1\n2")],
    "NUL in a value": [*GET, (b"x-a", b"1\x002")],
    ":method twice": [(b":method", b"GET"), *GET],
    ":authority twice": [*GET, (b":authority", b"other")],
    ":path twice, in another order": [
        (b":path", b"/"),
        (b":scheme", b"https"),
        (b":path", b"/"),
        (b":method", b"GET"),
    ],
    "no :method": GET[1:],
    "CONNECT without :authority": [(b":method", b"CONNECT")],
    "content-length not digits": [*GET, (b"content-length", b"1e3")],
    "two content-lengths": [*GET, (b"content-length", b"1"), (b"content-length", b"2")],
    "space in a name": [*GET, (b"x a", b"1")],
    "CONNECT with a path": [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_request_resets_its_stream_and_the_connection_goes_on(name: str) -> None:
    pair = Pair()
    events = pair.raw(HeadersFrame(1, data=pair.encoder.encode(MALFORMED[name]), flags=["END_HEADERS"]))
    assert kinds(events) == [c.REFUSED]
    (reset,) = pair.sent_frames()
    assert isinstance(reset, RstStreamFrame) and reset.error_code == c.PROTOCOL_ERROR
    events = pair.raw(HeadersFrame(3, data=pair.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"]))
    assert kinds(events) == [c.REQUEST, c.ENDED] and events[0].headers == GET


@pytest.mark.parametrize(
    ("length", "body", "end"),
    [(b"3", b"ab", True), (b"3", b"abcd", False), (b"0", b"a", True)],  # short, long, none announced
)
def test_a_body_that_disagrees_with_content_length_resets_the_stream(
    length: bytes, body: bytes, end: bool
) -> None:
    pair = Pair()
    head = [(b":method", b"POST"), *GET[1:], (b"content-length", length)]
    events = pair.raw(
        HeadersFrame(1, data=pair.encoder.encode(head), flags=["END_HEADERS"]),
        DataFrame(1, data=body, flags=["END_STREAM"] if end else []),
    )
    assert kinds(events) == [c.REQUEST, c.REFUSED]


def test_an_oversized_header_list_still_opens_the_stream_without_its_fields() -> None:
    pair = Pair(max_header_list=1000)
    head = [*GET, (b"x-big", b"v" * 2000)]
    events = pair.raw(HeadersFrame(1, data=pair.encoder.encode(head), flags=["END_HEADERS", "END_STREAM"]))
    assert kinds(events) == [c.REQUEST, c.ENDED] and events[0].headers is None  # http2.py answers 431


def test_streams_beyond_the_cap_are_refused() -> None:
    pair = Pair(max_streams=2)
    block = pair.encoder.encode(GET)
    events = pair.raw(*(HeadersFrame(sid, data=block, flags=["END_HEADERS"]) for sid in (1, 3, 5)))
    assert kinds(events) == [c.REQUEST, c.REQUEST, c.REFUSED]
    (reset,) = [f for f in pair.sent_frames() if isinstance(f, RstStreamFrame)]
    assert reset.stream_id == 5 and reset.error_code == c.REFUSED_STREAM


def test_a_continuation_flood_is_a_connection_error_with_goaway() -> None:
    pair = Pair(max_header_list=8192)  # blocks of at most 16 KiB
    frames: list[Frame] = [HeadersFrame(1, data=pair.encoder.encode(GET))]
    frames += [ContinuationFrame(1, data=b"\x00\x01a\x01b" * 200) for _ in range(20)]
    with pytest.raises(H2ProtocolError) as caught:
        pair.raw(*frames)
    assert caught.value.code == c.ENHANCE_YOUR_CALM
    (goaway,) = pair.sent_frames()
    assert isinstance(goaway, GoAwayFrame) and goaway.error_code == c.ENHANCE_YOUR_CALM
    assert pair.server.closed


def test_a_header_block_split_over_continuations_is_one_request() -> None:
    pair = Pair()
    block = pair.encoder.encode([*GET, (b"x-a", b"1" * 3000)])
    events = pair.raw(
        HeadersFrame(1, data=block[:10], flags=["END_STREAM"]),
        ContinuationFrame(1, data=block[10:100]),
        ContinuationFrame(1, data=block[100:], flags=["END_HEADERS"]),
    )
    assert kinds(events) == [c.REQUEST, c.ENDED] and events[0].headers == [*GET, (b"x-a", b"1" * 3000)]


CONNECTION_ERRORS: dict[str, tuple[list[Frame | bytes], int]] = {
    "header block interrupted": (
        [HeadersFrame(1, data=b"\x82"), PingFrame(0, opaque_data=b"12345678")],
        c.PROTOCOL_ERROR,
    ),
    "continuation alone": ([ContinuationFrame(1, data=b"\x82", flags=["END_HEADERS"])], c.PROTOCOL_ERROR),
    "even stream id": ([HeadersFrame(2, data=b"\x82\x87\x84", flags=["END_HEADERS"])], c.PROTOCOL_ERROR),
    "data on an idle stream": ([DataFrame(7, data=b"x")], c.PROTOCOL_ERROR),
    "data on stream 0": ([frame(c.DATA, 0, 0, b"x")], c.PROTOCOL_ERROR),
    "push promise": ([PushPromiseFrame(1, promised_stream_id=2, data=b"\x82")], c.PROTOCOL_ERROR),
    "window update of 0": ([WindowUpdateFrame(0, window_increment=0)], c.PROTOCOL_ERROR),
    "window overflow": ([WindowUpdateFrame(0, window_increment=(1 << 31) - 1)], c.FLOW_CONTROL_ERROR),
    "rst on an idle stream": ([RstStreamFrame(9, error_code=8)], c.PROTOCOL_ERROR),
    "bad frame size": ([SettingsFrame(0, settings={c.MAX_FRAME_SIZE: 100})], c.PROTOCOL_ERROR),
    "enable push 2": ([SettingsFrame(0, settings={c.ENABLE_PUSH: 2})], c.PROTOCOL_ERROR),
    "huge initial window": (
        [SettingsFrame(0, settings={c.INITIAL_WINDOW_SIZE: 1 << 31})],
        c.FLOW_CONTROL_ERROR,
    ),
    "broken hpack": ([HeadersFrame(1, data=b"\xff\xff", flags=["END_HEADERS"])], c.COMPRESSION_ERROR),
}


@pytest.mark.parametrize("name", sorted(CONNECTION_ERRORS))
def test_connection_errors_raise_and_queue_goaway(name: str) -> None:
    frames, code = CONNECTION_ERRORS[name]
    pair = Pair()
    with pytest.raises(H2ProtocolError) as caught:
        pair.raw(*frames)
    assert caught.value.code == code
    assert isinstance(pair.sent_frames()[-1], GoAwayFrame)


def test_a_frame_above_the_frame_size_is_refused() -> None:
    pair = Pair()
    with pytest.raises(H2ProtocolError) as caught:
        pair.raw(frame(c.DATA, 0, 1, b"x" * 16385)[:20])  # the header alone is enough to refuse it
    assert caught.value.code == c.FRAME_SIZE_ERROR


def test_the_preface_and_first_settings_are_required() -> None:
    server = ServerCodec(max_streams=10, max_header_list=1000)
    with pytest.raises(H2ProtocolError):
        server.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    server = ServerCodec(max_streams=10, max_header_list=1000)
    with pytest.raises(H2ProtocolError):
        server.receive_data(c.PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())


def test_bytes_may_arrive_one_at_a_time() -> None:
    server = ServerCodec(max_streams=10, max_header_list=16384)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, GET, end_stream=True)
    events: list[H2Event] = []
    for byte in client.data_to_send():
        events += server.receive_data(bytes((byte,)))
    assert kinds(events) == [c.SETTINGS_CHANGED, c.REQUEST, c.ENDED] and events[1].headers == GET


def test_ping_is_answered_and_counted() -> None:
    pair = Pair()
    events = pair.raw(PingFrame(0, opaque_data=b"abcdefgh"))
    assert kinds(events) == [c.PINGED]
    (ack,) = pair.sent_frames()
    assert isinstance(ack, PingFrame) and "ACK" in ack.flags and ack.opaque_data == b"abcdefgh"


def test_frames_that_ask_nothing_are_reported_for_flood_counting() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.to_server()
    events = pair.raw(DataFrame(1, data=b""), PriorityFrame(1, depends_on=0), PriorityFrame(3, depends_on=0))
    assert kinds(events) == [c.IDLE_FRAME] * 3


def test_resets_goaway_and_closed_streams() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET)
    pair.to_server()
    assert kinds(pair.raw(RstStreamFrame(1, error_code=8))) == [c.RESET]
    assert kinds(pair.raw(RstStreamFrame(1, error_code=8))) == [c.RESET]  # again: counted, no error
    assert kinds(pair.raw(DataFrame(1, data=b"late"))) == []  # after the reset: ignored
    assert kinds(pair.raw(GoAwayFrame(0, error_code=0))) == [c.GONE]


def test_after_our_goaway_new_streams_are_not_taken_but_decoded() -> None:
    pair = Pair()
    pair.server.close_connection()
    block = pair.encoder.encode([*GET, (b"x-new", b"1")])  # adds to the client's table
    assert pair.raw(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"])) == []
    assert pair.server._decoder.table  # the table followed the client's


def test_trailers_end_the_request_and_may_not_carry_pseudo_headers() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.client.send_data(1, b"x")
    pair.client.send_headers(1, [(b"x-checksum", b"1")], end_stream=True)
    assert kinds(pair.to_server()) == [c.REQUEST, c.BODY, c.ENDED]
    head = [(b":method", b"POST"), *GET[1:]]
    events = pair.raw(
        HeadersFrame(3, data=pair.encoder.encode(head), flags=["END_HEADERS"]),
        HeadersFrame(3, data=pair.encoder.encode([(b":path", b"/x")]), flags=["END_HEADERS", "END_STREAM"]),
    )
    assert kinds(events) == [c.REQUEST, c.REFUSED]


def test_padding_counts_against_the_window_but_is_not_data() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.to_server()
    events = pair.raw(DataFrame(1, data=b"abc", flags=["PADDED", "END_STREAM"], pad_length=10))
    assert kinds(events) == [c.BODY, c.ENDED]
    assert events[0].data == b"abc" and events[0].flow == 14


def test_a_large_response_header_block_goes_out_in_continuations() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    headers = [(b":status", b"200"), (b"x-big", b"v" * 40000)]
    pair.server.send_headers(1, headers, True)
    got = pair.to_client()
    assert next(e for e in got if isinstance(e, h2.events.ResponseReceived)).headers == headers


def test_a_header_table_size_setting_makes_the_next_block_start_with_an_update() -> None:
    pair = with_client_setting(h2.settings.SettingCodes.HEADER_TABLE_SIZE, 0)
    pair.server.send_headers(1, [(b":status", b"204")], True)
    frames = pair.sent_frames()
    assert isinstance(frames[0], HeadersFrame) and frames[0].data[:1] == b"\x20"


def test_each_event_names_its_stream() -> None:
    pair = Pair(max_streams=2)
    block = pair.encoder.encode([(b":method", b"POST"), *GET[1:]])
    events = pair.raw(
        HeadersFrame(1, data=block, flags=["END_HEADERS"]),
        DataFrame(1, data=b"abc"),
        DataFrame(1, data=b"", flags=["END_STREAM"]),
        HeadersFrame(3, data=block, flags=["END_HEADERS"]),
        DataFrame(3, data=b""),
        HeadersFrame(5, data=block, flags=["END_HEADERS"]),  # a third: refused
        WindowUpdateFrame(3, window_increment=10),
        RstStreamFrame(3, error_code=8),
        PingFrame(0, opaque_data=b"12345678"),
        GoAwayFrame(0, error_code=0),
    )
    assert [(e.kind, e.stream_id) for e in events] == [
        (c.REQUEST, 1),
        (c.BODY, 1),
        (c.ENDED, 1),
        (c.REQUEST, 3),
        (c.IDLE_FRAME, 3),
        (c.REFUSED, 5),
        (c.WINDOW, 3),
        (c.RESET, 3),
        (c.PINGED, 0),
        (c.GONE, 0),
    ]


def test_our_settings_and_the_connection_window_reach_the_client() -> None:
    pair = Pair(max_streams=7, max_header_list=5000)
    settings = pair.client.remote_settings
    assert settings.max_concurrent_streams == 7
    assert settings.max_header_list_size == 5000
    assert settings.enable_push == 0
    assert settings.initial_window_size == 65535
    assert pair.client.outbound_flow_control_window == 1 << 20


def test_the_connection_window_reopens_once_half_of_it_is_taken() -> None:
    pair = Pair()  # a connection window of 1 MiB
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.to_server()
    pair.server.acknowledge_received_data(524287, 1)
    updates = [f for f in pair.sent_frames() if isinstance(f, WindowUpdateFrame) and f.stream_id == 0]
    assert updates == []
    pair.server.acknowledge_received_data(1, 1)
    (update,) = [f for f in pair.sent_frames() if isinstance(f, WindowUpdateFrame) and f.stream_id == 0]
    assert update.window_increment == 524288


def test_data_up_to_the_connection_window_is_taken_and_one_byte_more_is_not() -> None:
    server = ServerCodec(max_streams=10, max_header_list=16384)  # the default window: 65,535
    server.initiate_connection()
    encoder = hpack.Encoder()
    head = encoder.encode([(b":method", b"POST"), *GET[1:]])
    frames = [SettingsFrame(0), HeadersFrame(1, data=head, flags=["END_HEADERS"])]
    frames += [HeadersFrame(3, data=head, flags=["END_HEADERS"])]
    frames += [DataFrame(1, data=b"x" * 16384) for _ in range(3)]
    frames += [DataFrame(3, data=b"x" * (65535 - 3 * 16384))]
    events = server.receive_data(c.PREFACE + b"".join(f.serialize() for f in frames))
    assert kinds(events)[-1] == c.BODY
    with pytest.raises(H2ProtocolError) as caught:
        server.receive_data(DataFrame(3, data=b"y").serialize())
    assert caught.value.code == c.FLOW_CONTROL_ERROR


def test_sent_data_spends_the_stream_and_connection_windows() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.to_server()
    pair.server.send_headers(1, [(b":status", b"200")], False)
    for _ in range(3):
        pair.server.send_data(1, b"x" * 16384, False)
    pair.server.send_data(1, b"x" * 10000, False)
    assert pair.server.local_flow_control_window(1) == 65535 - 59152
    assert pair.server.local_flow_control_window(3) == 65535 - 59152  # the connection's is spent too
    pair.client.increment_flow_control_window(1000)  # the connection's only
    pair.to_server()
    assert pair.server.local_flow_control_window(3) == 65535 - 59152 + 1000
    assert pair.server.local_flow_control_window(1) == 65535 - 59152
    assert pair.server.local_flow_control_window(99) == 0


@pytest.mark.parametrize(("size", "ok"), [(16384, True), (16777215, True), (16777216, False), (16383, False)])
def test_max_frame_size_is_taken_within_its_range(size: int, ok: bool) -> None:
    pair = Pair()
    frame_ = SettingsFrame(0)
    frame_.settings = {c.MAX_FRAME_SIZE: size}
    if ok:
        pair.raw(frame_)
        assert pair.server.max_outbound_frame_size == size
    else:
        with pytest.raises(H2ProtocolError) as caught:
            pair.raw(frame_)
        assert caught.value.code == c.PROTOCOL_ERROR


def test_a_larger_frame_size_lets_a_header_block_go_in_one_frame() -> None:
    pair = with_client_setting(h2.settings.SettingCodes.MAX_FRAME_SIZE, 65536)
    pair.server.send_headers(1, [(b":status", b"200"), (b"x-big", b"v" * 40000)], True)
    frames = pair.sent_frames()
    assert len(frames) == 1 and "END_HEADERS" in frames[0].flags and "END_STREAM" in frames[0].flags


def test_a_frame_of_exactly_the_frame_size_and_one_of_only_a_header_are_read() -> None:
    pair = Pair()
    pair.client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
    pair.to_server()
    events = pair.raw(DataFrame(1, data=b"x" * 16384))
    assert kinds(events) == [c.BODY] and len(events[0].data) == 16384
    assert kinds(pair.raw(frame(c.DATA, c.END_STREAM, 1, b""))) == [c.ENDED]  # 9 bytes, nothing after


def test_stream_level_window_errors_reset_the_stream_only() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.to_server()
    events = pair.raw(frame(c.WINDOW_UPDATE, 0, 1, (0).to_bytes(4, "big")))
    events += pair.raw(WindowUpdateFrame(3, window_increment=(1 << 31) - 1))
    assert [(e.kind, e.stream_id) for e in events] == [(c.REFUSED, 1), (c.REFUSED, 3)]
    codes = [f.error_code for f in pair.sent_frames() if isinstance(f, RstStreamFrame)]
    assert codes == [c.PROTOCOL_ERROR, c.FLOW_CONTROL_ERROR]
    assert pair.raw(WindowUpdateFrame(1, window_increment=5)) == []  # closed meanwhile: ignored


def test_a_priority_on_itself_resets_the_stream_and_keeps_the_table() -> None:
    pair = Pair()
    block = pair.encoder.encode([*GET, (b"x-new", b"1")])
    events = pair.raw(
        HeadersFrame(1, data=block, flags=["END_HEADERS", "PRIORITY"], depends_on=1, stream_weight=16)
    )
    assert [(e.kind, e.stream_id) for e in events] == [(c.REFUSED, 1)]
    follow = pair.encoder.encode([*GET, (b"x-new", b"1")])  # refers to the entry the first block added
    events = pair.raw(HeadersFrame(3, data=follow, flags=["END_HEADERS", "END_STREAM"]))
    assert kinds(events) == [c.REQUEST, c.ENDED] and events[0].headers == [*GET, (b"x-new", b"1")]


MORE_CONNECTION_ERRORS: dict[str, tuple[bytes, int]] = {
    "priority on stream 0": (frame(c.PRIORITY, 0, 0, b"\x00" * 5), c.PROTOCOL_ERROR),
    "goaway on a stream": (frame(c.GOAWAY, 0, 1, b"\x00" * 8), c.PROTOCOL_ERROR),
    "headers on stream 0": (frame(c.HEADERS, c.END_HEADERS, 0, b"\x82"), c.PROTOCOL_ERROR),
    "padded without a pad length": (frame(c.DATA, c.PADDED, 1, b""), c.FRAME_SIZE_ERROR),
    "padding longer than the frame": (
        frame(c.HEADERS, c.PADDED | c.END_HEADERS, 1, b"\x05ab"),
        c.PROTOCOL_ERROR,
    ),
    "priority too short": (
        frame(c.HEADERS, c.PRIORITY_FLAG | c.END_HEADERS, 1, b"\x00\x00"),
        c.FRAME_SIZE_ERROR,
    ),
    "settings on a stream": (frame(c.SETTINGS, 0, 1, b""), c.PROTOCOL_ERROR),
    "settings ack with a payload": (frame(c.SETTINGS, c.ACK, 0, b"\x00" * 6), c.FRAME_SIZE_ERROR),
    "settings of 5 bytes": (frame(c.SETTINGS, 0, 0, b"\x00" * 5), c.FRAME_SIZE_ERROR),
    "ping on a stream": (frame(c.PING, 0, 1, b"\x00" * 8), c.PROTOCOL_ERROR),
    "ping of 7 bytes": (frame(c.PING, 0, 0, b"\x00" * 7), c.FRAME_SIZE_ERROR),
    "window update of 3 bytes": (frame(c.WINDOW_UPDATE, 0, 0, b"\x00" * 3), c.FRAME_SIZE_ERROR),
    "window update on an idle stream": (frame(c.WINDOW_UPDATE, 0, 9, b"\x00\x00\x00\x01"), c.PROTOCOL_ERROR),
    "rst on stream 0": (frame(c.RST_STREAM, 0, 0, b"\x00" * 4), c.PROTOCOL_ERROR),
    "rst of 3 bytes": (frame(c.RST_STREAM, 0, 1, b"\x00" * 3), c.FRAME_SIZE_ERROR),
}


@pytest.mark.parametrize("name", sorted(MORE_CONNECTION_ERRORS))
def test_more_connection_errors_carry_their_code_in_goaway(name: str) -> None:
    data, code = MORE_CONNECTION_ERRORS[name]
    pair = Pair()
    pair.client.send_headers(1, GET)  # stream 1 is open, so frames on it are not "idle" errors
    pair.to_server()
    with pytest.raises(H2ProtocolError) as caught:
        pair.raw(data)
    assert caught.value.code == code
    goaway = pair.sent_frames()[-1]
    assert isinstance(goaway, GoAwayFrame) and goaway.error_code == code and goaway.last_stream_id == 1


def test_a_settings_acknowledgement_first_is_refused() -> None:
    server = ServerCodec(max_streams=10, max_header_list=1000)
    with pytest.raises(H2ProtocolError):
        server.receive_data(c.PREFACE + frame(c.SETTINGS, c.ACK, 0, b""))


def test_random_frames_give_events_or_a_protocol_error_never_a_crash() -> None:
    """Fuzz (seeded, bounded): valid connections with bytes flipped, cut or inserted, and random frames."""
    rng = random.Random(2023)
    valid = Pair()
    valid.client.send_headers(1, [(b":method", b"POST"), *GET[1:], (b"content-length", b"5")])
    valid.client.send_data(1, b"hello", end_stream=True)
    valid.client.send_headers(3, GET, end_stream=True)
    valid.client.ping(b"12345678")
    valid.client.reset_stream(3)
    script = c.PREFACE + SettingsFrame(0).serialize() + valid.client.data_to_send()
    for _ in range(3000):
        data = bytearray(script)
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(len(c.PREFACE), len(data))
            how = rng.random()
            if how < 0.5:
                data[where] = rng.randrange(256)
            elif how < 0.75:
                del data[where : where + rng.randint(1, 20)]
            else:
                kind, flags, sid = rng.randrange(12), rng.randrange(256), rng.choice([0, 1, 2, 3, 5, 99])
                data[where:where] = frame(kind, flags, sid, rng.randbytes(rng.randint(0, 40)))
        server = ServerCodec(max_streams=10, max_header_list=4096)
        server.initiate_connection()
        try:
            for start in range(0, len(data), 37):  # in pieces, as reads come
                server.receive_data(bytes(data[start : start + 37]))
                server.data_to_send()
        except H2ProtocolError:
            assert server.closed  # its GOAWAY is queued


def test_data_after_the_clients_end_resets_the_stream_stream_closed() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    events = pair.raw(DataFrame(1, data=b"late"))
    assert [(e.kind, e.stream_id) for e in events] == [(c.REFUSED, 1)]
    (reset,) = [f for f in pair.sent_frames() if isinstance(f, RstStreamFrame)]
    assert reset.error_code == c.STREAM_CLOSED


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # HEADERS ending the stream while announcing a body
        ([(b":method", b"POST"), *GET[1:], (b"content-length", b"5")], None),
        # trailers that do not end the stream
        ([(b":method", b"POST"), *GET[1:]], [(b"x-t", b"1")]),
    ],
)
def test_header_blocks_that_cannot_end_as_they_do_reset_the_stream(
    first: list[tuple[bytes, bytes]], second: list[tuple[bytes, bytes]] | None
) -> None:
    pair = Pair()
    if second is None:
        frames = [HeadersFrame(1, data=pair.encoder.encode(first), flags=["END_HEADERS", "END_STREAM"])]
    else:
        frames = [
            HeadersFrame(1, data=pair.encoder.encode(first), flags=["END_HEADERS"]),
            HeadersFrame(1, data=pair.encoder.encode(second), flags=["END_HEADERS"]),
        ]
    events = pair.raw(*frames)
    assert [(e.kind, e.stream_id) for e in events][-1] == (c.REFUSED, 1)
    assert c.REQUEST not in kinds(events[1:])


def test_windows_may_reach_exactly_the_largest_size() -> None:
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    events = pair.raw(
        WindowUpdateFrame(0, window_increment=c.MAX_WINDOW - 65535),
        WindowUpdateFrame(1, window_increment=c.MAX_WINDOW - 65535),
    )
    assert kinds(events) == [c.WINDOW, c.WINDOW]
    assert pair.server.local_flow_control_window(1) == c.MAX_WINDOW
    settings = SettingsFrame(0)
    settings.settings = {c.INITIAL_WINDOW_SIZE: c.MAX_WINDOW}
    with pytest.raises(H2ProtocolError):  # stream 1's window would pass the largest size
        pair.raw(settings)


def block_of(size: int) -> bytes:
    """A valid header block of exactly `size` bytes: one literal field with a long value."""
    for length in range(size, 0, -1):
        block = bytes([0x00, 3]) + b"x-a" + encode_int(length, 7, 0) + b"v" * length
        if len(block) == size:
            return block
    raise AssertionError(size)


@pytest.mark.parametrize(("size", "flood"), [(20_000, False), (20_001, True)])
def test_a_header_block_of_twice_the_list_limit_is_taken_and_one_byte_more_is_a_flood(
    size: int, flood: bool
) -> None:
    pair = Pair(max_header_list=10_000)
    head = pair.encoder.encode(GET)
    block = head + block_of(size - len(head))
    assert len(block) == size
    frames: list[Frame] = [HeadersFrame(1, data=block[:10_000], flags=["END_STREAM"])]
    frames += [ContinuationFrame(1, data=block[10_000:], flags=["END_HEADERS"])]
    if flood:
        with pytest.raises(H2ProtocolError) as caught:
            pair.raw(*frames)
        assert caught.value.code == c.ENHANCE_YOUR_CALM
    else:
        events = pair.raw(*frames)
        assert kinds(events) == [c.REQUEST, c.ENDED] and events[0].headers is None  # oversized: a 431


WELL_FORMED = {
    "te: trailers": [*GET, (b"te", b"trailers")],
    "two equal content-lengths": [*GET, (b"content-length", b"0"), (b"content-length", b"0")],
    "pseudo-headers in another order": [GET[3], GET[2], GET[1], GET[0]],
    "CONNECT with :authority only": [(b":method", b"CONNECT"), (b":authority", b"a:1")],
}


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_well_formed_requests_are_taken(name: str) -> None:
    pair = Pair()
    fields = WELL_FORMED[name]
    events = pair.raw(HeadersFrame(1, data=pair.encoder.encode(fields), flags=["END_HEADERS"]))
    assert kinds(events) == [c.REQUEST] and events[0].headers == fields


def test_settings_apply_by_their_whole_id_and_exact_bounds() -> None:
    pair = Pair()
    # An id whose low byte is INITIAL_WINDOW_SIZE's, with a value that one may not have: ignored.
    unknown = frame(c.SETTINGS, 0, 0, (0x0104).to_bytes(2, "big") + (1 << 31).to_bytes(4, "big"))
    assert kinds(pair.raw(unknown)) == [c.SETTINGS_CHANGED]
    one_more = SettingsFrame(0)
    one_more.settings = {c.INITIAL_WINDOW_SIZE: 65536}  # the windows grew (by 1): blocked streams go on
    assert [(e.kind, e.stream_id) for e in pair.raw(one_more)] == [(c.WINDOW, 0), (c.SETTINGS_CHANGED, 0)]
    largest = SettingsFrame(0)
    largest.settings = {c.INITIAL_WINDOW_SIZE: c.MAX_WINDOW}  # no stream open: exactly the largest is fine
    assert c.SETTINGS_CHANGED in kinds(pair.raw(largest))
