"""
STAMP's unauthenticated packets (L{echod.stamp.packets}): each field at
the offset RFC 8762's figures give it, every cut of a packet read as far as
it goes with what is missing said, and nothing but a packet too short to
use refused.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.estimate import ErrorEstimate
from echod.stamp.packets import (
    BASE,
    REPLY_MINIMUM,
    REQUEST_MINIMUM,
    NotStampError,
    ReflectorPacket,
    SenderPacket,
    parse_reply,
    parse_request,
    request,
)
from echod.stamp.timestamps import ntp_from_ns, ptp_from_ns
from echod.stamp.tlv import NONE, Flag, Problem, Tlv, parse_tlvs
from echod.stamp.tlvtypes import ClassOfService, ExtraPadding

NOW = 1_796_323_920_315_393_123  # 2026-12-03, to the nanosecond
SYNCED = ErrorEstimate(True, False, 5, 135)  # 1.006 µs
UNSYNCED = ErrorEstimate(False, False, 29, 128)  # 16 s
TLVS = (ClassOfService(46).tlv(), ExtraPadding.zeros(4).tlv())


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def u64(value: int) -> bytes:
    return struct.pack("!Q", value)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def reflector_packet(**fields) -> ReflectorPacket:
    defaults = dict(
        sequence=11,
        timestamp=ntp_from_ns(NOW + 20_000),
        error=UNSYNCED,
        ssid=0x1234,
        received=ntp_from_ns(NOW + 10_000),
        sender_sequence=7,
        sender_timestamp=ntp_from_ns(NOW),
        sender_error=SYNCED,
        ttl=61,
        extensions=parse_tlvs(b"".join(tlv.encode() for tlv in TLVS)),
    )
    return ReflectorPacket(**{**defaults, **fields})


def test_a_sender_packet_is_sequence_timestamp_estimate_ssid_and_28_octets_of_zeros_then_tlvs():
    packet = request(7, NOW, SYNCED, ssid=0x1234, tlvs=TLVS)
    wire = packet.encode()
    assert wire == u32(7) + u64(ntp_from_ns(NOW)) + u16(0x8587) + u16(0x1234) + bytes(28) + b"".join(
        tlv.encode() for tlv in TLVS
    )
    assert packet.size == len(wire) == BASE + 16


def test_a_reflector_packet_has_each_field_where_rfc_8762_puts_it():
    packet = reflector_packet()
    wire = packet.encode()
    assert wire[0:4] == u32(11)
    assert wire[4:12] == u64(ntp_from_ns(NOW + 20_000))  # t3
    assert wire[12:14] == u16(0x1D80)  # 16 s, not synchronized
    assert wire[14:16] == u16(0x1234)
    assert wire[16:24] == u64(ntp_from_ns(NOW + 10_000))  # t2
    assert wire[24:28] == u32(7)
    assert wire[28:36] == u64(ntp_from_ns(NOW))  # t1
    assert wire[36:38] == u16(0x8587)
    assert wire[38:40] == bytes(2)
    assert wire[40] == 61
    assert wire[41:44] == bytes(3)
    assert wire[44:] == b"".join(tlv.encode() for tlv in TLVS)


def test_a_ttl_nobody_knows_is_written_as_zero():
    assert reflector_packet(ttl=None).encode()[40] == 0


def test_every_cut_of_a_reflector_packet_is_read_as_far_as_it_goes():
    whole = reflector_packet().encode()
    for cut in range(len(whole) + 1):
        data = whole[:cut]
        if cut < REPLY_MINIMUM:
            with pytest.raises(NotStampError) as raised:
                parse_reply(data)
            assert (raised.value.kind, raised.value.length, raised.value.needed) == ("reflector", cut, 28)
            continue
        packet = parse_reply(data)
        assert (packet.sequence, packet.ssid, packet.sender_sequence, packet.length) == (11, 0x1234, 7, cut)
        assert packet.sent_ns() == NOW + 20_000 and packet.received_ns() == NOW + 10_000
        assert packet.sender_timestamp == (ntp_from_ns(NOW) if cut >= 36 else None)
        assert packet.sender_sent_ns() == (NOW if cut >= 36 else None)
        assert packet.sender_error == (SYNCED if cut >= 38 else None)
        assert packet.ttl == (61 if cut >= 41 else None)
        assert packet.extensions == (parse_tlvs(data, BASE) if cut > BASE else NONE)
        assert packet.extensions.tlvs == TLVS[: (cut >= 52) + (cut >= 60)]
        read = 38 if cut >= 38 else 36 if cut >= 36 else 28  # a field cut short is not read
        assert packet.encode()[:read] == data[:read]
        assert len(packet.encode()) == cut


def test_every_cut_of_a_sender_packet_is_read_as_far_as_it_goes():
    whole = request(7, NOW, SYNCED, ssid=0x1234, tlvs=TLVS).encode()
    for cut in range(len(whole) + 1):
        data = whole[:cut]
        if cut < REQUEST_MINIMUM:
            with pytest.raises(
                NotStampError, match=f"{cut} octets are no STAMP sender packet: it needs at least 14"
            ):
                parse_request(data)
            continue
        packet = parse_request(data)
        assert (packet.sequence, packet.sent_ns(), packet.error, packet.length) == (7, NOW, SYNCED, cut)
        assert packet.ssid == (0x1234 if cut >= 16 else None)
        assert packet.extensions == (parse_tlvs(data, BASE) if cut > BASE else NONE)
        assert packet.encode() == (data if cut != 15 else data[:14] + bytes(1))  # half an SSID is not read


def test_a_38_octet_reply_of_the_field_has_no_ttl():
    data = reflector_packet(extensions=NONE).encode()[:38]
    packet = parse_reply(data)
    assert packet.ttl is None
    assert packet.sender_error == SYNCED


def test_a_reply_whose_t2_is_its_t3_is_read_as_it_is():
    packet = parse_reply(reflector_packet(received=ntp_from_ns(NOW + 20_000)).encode())
    assert packet.received_ns() == packet.sent_ns() == NOW + 20_000
    assert packet.turnaround_ns() == 0


def test_the_turnaround_is_t3_less_t2_across_the_2036_rollover_too():
    assert reflector_packet().turnaround_ns() == 10_000
    rollover = 2_085_978_496 * 10**9  # 2036-02-07 06:28:16 UTC, NTP second 0 of era 1
    across = reflector_packet(received=ntp_from_ns(rollover - 300), timestamp=ntp_from_ns(rollover + 700))
    assert across.timestamp >> 32 == 0 and across.received >> 32 == (1 << 32) - 1
    assert across.turnaround_ns() == 1000


def test_random_padding_after_a_reply_is_kept_and_said_not_raised():
    padding = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb924")
    packet = parse_reply(reflector_packet(extensions=NONE).encode() + padding)
    assert packet.extensions.tlvs == ()
    assert packet.extensions.trailing == padding
    assert [(f.offset, f.problem) for f in packet.extensions.malformed] == [(44, Problem.BEYOND_END)]


def test_ptp_timestamps_are_read_in_the_format_each_party_names():
    ptp = dataclasses.replace(UNSYNCED, ptp=True)
    packet = reflector_packet(
        error=ptp,
        timestamp=ptp_from_ns(NOW + 2, 37),
        received=ptp_from_ns(NOW + 1, 37),
    )
    assert (packet.sent_ns(37), packet.received_ns(37), packet.sender_sent_ns(37)) == (NOW + 2, NOW + 1, NOW)


def test_a_sender_packet_of_a_given_length_is_cut_or_filled():
    packet = request(1, NOW, SYNCED)
    assert dataclasses.replace(packet, length=20).encode() == packet.encode()[:20]
    assert dataclasses.replace(packet, length=50).encode() == packet.encode() + bytes(6)


estimates = st.builds(ErrorEstimate, st.booleans(), st.booleans(), st.integers(0, 63), st.integers(0, 255))
words = st.integers(0, (1 << 32) - 1)
stamps = st.integers(0, (1 << 64) - 1)
tlv_lists = st.lists(
    st.builds(Tlv, st.integers(9, 255), st.binary(max_size=12), st.sampled_from([0, Flag.U, Flag.M])),
    max_size=3,
).map(lambda tlvs: parse_tlvs(b"".join(tlv.encode() for tlv in tlvs)))


@given(words, stamps, estimates, st.integers(0, 0xFFFF), tlv_lists)
def test_a_sender_packet_comes_back_from_its_octets(sequence, timestamp, error, ssid, extensions):
    packet = SenderPacket(sequence, timestamp, error, ssid, extensions)
    assert parse_request(packet.encode()) == dataclasses.replace(packet, length=packet.size)


reflector_packets = st.builds(
    ReflectorPacket,
    words,
    stamps,
    estimates,
    st.integers(0, 0xFFFF),
    stamps,
    words,
    stamps,
    estimates,
    st.integers(0, 255),
    tlv_lists,
)


@given(reflector_packets)
def test_a_reflector_packet_comes_back_from_its_octets(packet):
    assert parse_reply(packet.encode()) == dataclasses.replace(packet, length=packet.size)


@given(st.binary(min_size=REPLY_MINIMUM, max_size=120))
def test_any_octets_long_enough_are_a_reply_read_without_raising(data):
    packet = parse_reply(data)
    assert packet.length == len(data)
    assert len(packet.encode()) == len(data)
    if len(data) >= BASE:
        assert packet.encode()[BASE:] == data[BASE:]


@given(st.binary(min_size=REQUEST_MINIMUM, max_size=120))
def test_any_octets_long_enough_are_a_request_read_without_raising(data):
    packet = parse_request(data)
    # What it writes back is what it read: all but the MBZ, and half an SSID.
    read = 16 if len(data) >= 16 else 14
    assert packet.encode() == data[:read] + bytes(len(data[read:BASE])) + data[BASE:]
