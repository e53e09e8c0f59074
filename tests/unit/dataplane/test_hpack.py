"""HPACK: our decoder reads what the hpack library encodes, and the library reads what our encoder writes."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from app.dataplane import hpack as ours
from app.dataplane.hpack import Decoder, Encoder, HpackError, decode_int, encode_int, huffman_decode

HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
BIG = 1 << 20


def test_huffman_decodes_what_the_library_encodes() -> None:
    rng = random.Random(7)
    samples = [bytes(range(256)), b"", b"www.example.com", b"no-cache"]
    samples += [rng.randbytes(rng.randint(1, 64)) for _ in range(2000)]
    for sample in samples:
        assert huffman_decode(HUFFMAN.encode(sample)) == sample


@pytest.mark.parametrize(
    ("coded", "why"),
    [
        (bytes.fromhex("ff"), "eight bits of padding"),  # padding longer than 7 bits
        (bytes.fromhex("00"), "padding of zeros"),  # '0' is a full 5-bit code + 3 zero bits of padding
        (bytes.fromhex("ffffffff"), "EOS in the string"),  # 30 ones is EOS itself
    ],
)
def test_huffman_refuses_bad_padding_and_eos(coded: bytes, why: str) -> None:
    with pytest.raises(HpackError):
        huffman_decode(coded)


def test_decoder_follows_the_library_encoder_through_indexing_and_eviction() -> None:
    rng = random.Random(11)
    encoder = hpack.Encoder()
    encoder.header_table_size = 256  # small: entries get evicted all the time
    decoder = Decoder(max_table_size=4096)
    for i in range(500):
        fields = [
            (b":method", rng.choice([b"GET", b"POST", b"PATCH"])),
            (b":path", b"/home?id=%d" % rng.randint(0, 30)),
            (b"x-%d" % rng.randint(0, 40), rng.randbytes(rng.randint(0, 90)).hex().encode()),
            (b"user-agent", b"a" * rng.randint(1, 300)),
        ]
        block = encoder.encode(fields, huffman=bool(i % 2))
        assert decoder.decode(block, BIG) == (fields, False)
    assert decoder.size <= 256


def test_an_oversized_list_is_flagged_and_the_table_stays_in_step() -> None:
    encoder = hpack.Encoder()
    decoder = Decoder()
    big = [(b"x-big", b"v" * 500), (b"x-more", b"w" * 500)]
    fields, oversized = decoder.decode(encoder.encode(big), 600)
    assert oversized and fields == [(b"x-big", b"v" * 500)]
    # The next block refers to entries the oversized one added: still decoded right.
    assert decoder.decode(encoder.encode(big), BIG) == (big, False)


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (bytes([0x80 | 70]), "index beyond both tables"),
        (bytes([0x80]), "index 0"),
        (bytes([0x3F, 0xE1, 0x3F]), "table size above the limit"),  # 31 + 8161 > 4096
        (bytes([0x82, 0x20]), "table size update after a field"),
        (bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), "integer too large"),
        (bytes([0xFF, 0xFF]), "integer cut short"),
        (bytes([0x40, 0x05, 0x61]), "string longer than its block"),
        (bytes([0x00, 0x01, 0x61]), "value missing"),
    ],
)
def test_decoder_refuses_broken_blocks(block: bytes, why: str) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block, BIG)


def test_a_size_update_evicts_and_is_honoured() -> None:
    encoder = hpack.Encoder()
    decoder = Decoder()
    decoder.decode(encoder.encode([(b"x-a", b"1" * 100)]), BIG)
    assert decoder.table
    decoder.decode(bytes([0x20]), BIG)  # size 0: the table empties
    assert decoder.table == [] and decoder.size == 0 and decoder.max_size == 0


def test_the_library_decodes_what_our_encoder_writes() -> None:
    encoder = Encoder()
    library = hpack.Decoder()
    fields = [
        (b":status", b"200"),  # a whole static entry
        (b":status", b"502"),  # a static name
        (b"content-type", b"application/json"),
        (b"x-long", b"z" * 1000),  # lengths past the 7-bit prefix
        (b"x-" + b"n" * 200, b""),
    ]
    assert library.decode(encoder.encode(fields), raw=True) == fields
    encoder.table_size_changed()
    block = encoder.encode(fields)
    assert block[0] == 0x20  # a size update first, then the fields
    assert library.decode(block, raw=True) == fields
    assert encoder.encode([(b":status", b"200")]) == bytes([0x88])  # the update goes once


@pytest.mark.parametrize("value", [0, 1, 14, 15, 16, 127, 128, 1337, 1 << 20])
@pytest.mark.parametrize("prefix", [4, 5, 7])
def test_integers_round_trip(value: int, prefix: int) -> None:
    encoded = encode_int(value, prefix, 0)
    assert decode_int(encoded, 0, prefix) == (value, len(encoded))


def test_the_field_cache_keeps_short_values_only_and_stays_bounded() -> None:
    encoder = Encoder()
    library = hpack.Decoder()
    long_field = (b"x-long", b"L" * 65)
    fields = [(b"x-n", b"%d" % n) for n in range(1500)] + [long_field]
    assert library.decode(encoder.encode(fields), raw=True) == fields
    assert long_field not in ours._ENCODED
    assert 0 < len(ours._ENCODED) <= 1024


def test_random_blocks_decode_or_raise_hpack_error_never_a_crash() -> None:
    rng = random.Random(5)
    decoded = 0
    for _ in range(20_000):
        try:
            Decoder().decode(rng.randbytes(rng.randint(0, 30)), 4096)
            decoded += 1
        except HpackError:
            pass
    assert 0 < decoded < 20_000  # both outcomes were exercised


def test_the_list_size_counts_32_per_field_and_its_bound_is_inclusive() -> None:
    block = hpack.Encoder().encode([(b"x-a", b"12345")])  # 3 + 5 + 32 = 40
    assert Decoder().decode(block, 40) == ([(b"x-a", b"12345")], False)
    assert Decoder().decode(block, 39) == ([], True)


def test_literals_without_indexing_and_never_indexed_stay_out_of_the_table() -> None:
    decoder = Decoder()
    block = bytes([0x00, 3]) + b"x-a" + bytes([1]) + b"1"  # without indexing, a new name
    block += bytes([0x10, 3]) + b"x-b" + bytes([1]) + b"2"  # never indexed
    block += (
        bytes([0x0F, 0x10, 4]) + b"text"
    )  # without indexing, name 31 (content-type) from the static table
    fields, _ = decoder.decode(block, BIG)
    assert fields == [(b"x-a", b"1"), (b"x-b", b"2"), (b"content-type", b"text")]
    assert decoder.table == [] and decoder.size == 0


def test_the_table_counts_its_entries_and_takes_one_of_exactly_its_size() -> None:
    decoder = Decoder(max_table_size=100)
    decoder.decode(bytes([0x40, 1]) + b"a" + bytes([1]) + b"b", BIG)  # 1 + 1 + 32 = 34
    decoder.decode(bytes([0x40, 1]) + b"c" + bytes([1]) + b"d", BIG)
    assert decoder.size == 68 and decoder.table == [(b"a", b"b"), (b"c", b"d")]
    exact = bytes([0x40, 1]) + b"e" + bytes([65]) + b"f" * 65  # 1 + 65 + 32 = 98: evicts both, fits
    decoder.decode(exact, BIG)
    assert decoder.table == [(b"e", b"f" * 65)] and decoder.size == 98
    decoder.decode(bytes([0x3F, 0x45]), BIG)  # a size update to exactly the limit (31 + 69 = 100)
    assert decoder.max_size == 100


def test_a_fresh_encoder_sends_no_size_update_and_its_cache_holds_encodings() -> None:
    assert Encoder().encode([(b":status", b"200")]) == bytes([0x88])
    edge = (b"x-edge", b"e" * 64)  # the longest value kept
    Encoder().encode([edge])
    assert ours._ENCODED[edge] == ours.encode_field(*edge)
