"""
A reflector's answer (L{echod.stamp.reflection}): never longer than the
request, the sender's fields copied bit for bit, and every TLV sent back in
its place with the flags RFC 8972 §4 wants.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.estimate import ErrorEstimate
from echod.stamp.packets import BASE, REPLY_MINIMUM, NotStampError, parse_reply, parse_request, request
from echod.stamp.reflection import reflect, reflect_tlvs
from echod.stamp.timestamps import ntp_from_ns, ptp_from_ns
from echod.stamp.tlv import Extensions, Flag, Tlv, TlvType, parse_tlvs
from echod.stamp.tlvtypes import ClassOfService, typed

NOW = 1_796_323_920_315_393_123
SENDER = ErrorEstimate(True, False, 5, 135)
REFLECTOR = ErrorEstimate(False, False, 29, 128)


def answered(data: bytes, **overrides) -> bytes:
    fields = dict(received_ns=NOW + 1000, sent_ns=NOW + 2000, error=REFLECTOR, ttl=64)
    return reflect(parse_request(data), **{**fields, **overrides}).encode()


@given(st.binary(min_size=14, max_size=200))
def test_an_answer_is_exactly_as_long_as_its_request_whatever_the_request(data):
    assert len(answered(data)) == len(data)


def test_a_request_shorter_than_the_base_gets_an_answer_cut_to_its_length():
    whole = answered(request(3, NOW, SENDER).encode())
    for length in range(14, BASE):
        assert answered(request(3, NOW, SENDER).encode()[:length]) == whole[:length]
    with pytest.raises(NotStampError):
        parse_reply(whole[: REPLY_MINIMUM - 1])


def test_the_senders_fields_are_copied_bit_for_bit():
    # t1 with a fraction finer than a nanosecond: a copy through nanoseconds would lose it.
    sent = request(9, NOW, SENDER, ssid=0xBEEF)
    sent = dataclasses.replace(sent, timestamp=sent.timestamp | 1)
    reply = parse_reply(answered(sent.encode()))
    assert (reply.sender_sequence, reply.sender_timestamp, reply.sender_error) == (9, sent.timestamp, SENDER)
    assert reply.ssid == 0xBEEF
    assert reply.sequence == 9  # stateless: the request's own


def test_a_stateful_reflector_numbers_its_answers_itself():
    assert parse_reply(answered(request(9, NOW, SENDER).encode(), sequence=500)).sequence == 500


def test_t2_and_t3_are_written_in_the_reflectors_format_and_the_ttl_as_received():
    reply = parse_reply(answered(request(1, NOW, SENDER).encode(), ttl=3))
    assert (reply.received, reply.timestamp, reply.error, reply.ttl) == (
        ntp_from_ns(NOW + 1000),
        ntp_from_ns(NOW + 2000),
        REFLECTOR,
        3,
    )
    ptp = dataclasses.replace(REFLECTOR, ptp=True)
    reply = parse_reply(answered(request(1, NOW, SENDER).encode(), error=ptp, tai_offset=37))
    assert (reply.received, reply.timestamp) == (ptp_from_ns(NOW + 1000, 37), ptp_from_ns(NOW + 2000, 37))
    assert parse_reply(answered(request(1, NOW, SENDER).encode(), ttl=None)).ttl == 0


def test_a_reflector_that_knows_no_tlv_sends_every_one_back_unrecognized_and_unchanged():
    tlvs = [ClassOfService(46).tlv(flags=0), Tlv(200, b"future", Flag.U | Flag.M | 0x01)]
    reply = parse_reply(answered(request(1, NOW, SENDER, tlvs=tlvs).encode()))
    assert reply.extensions.tlvs == tuple(tlv.with_flags(Flag.U) for tlv in tlvs)


def test_the_tlvs_a_reflector_understands_go_back_with_its_values_and_u_clear():
    def answer(tlv: Tlv) -> Tlv | None:
        if tlv.type != TlvType.CLASS_OF_SERVICE:
            return None
        return dataclasses.replace(typed(tlv), dscp2=10, ecn=2).tlv(flags=0)

    tlvs = [ClassOfService(46).tlv(), Tlv(200, b"?", Flag.U)]
    sent = parse_request(request(1, NOW, SENDER, tlvs=tlvs).encode())
    reply = parse_reply(answered(sent.encode(), extensions=reflect_tlvs(sent.extensions, answer)))
    assert reply.extensions.tlvs == (ClassOfService(46, 10, 2).tlv(flags=0), Tlv(200, b"?", Flag.U))


def test_malformed_tlvs_and_what_is_no_tlv_go_back_in_place_with_m_set():
    wrong = Tlv(TlvType.CLASS_OF_SERVICE, b"abc", Flag.U)
    cut = b"\x80\x01\x00\x09abc"  # Length 9, 3 octets there
    data = request(1, NOW, SENDER, tlvs=[wrong]).encode() + cut
    reply = parse_reply(answered(data))
    assert reply.extensions.tlvs == (wrong.with_flags(Flag.M),)
    assert reply.extensions.trailing == b"\x40" + cut[1:]
    assert len(reply.encode()) == len(data)


def test_an_answer_of_another_length_than_the_tlv_it_answers_is_refused():
    sent = parse_request(request(1, NOW, SENDER, tlvs=[ClassOfService().tlv()]).encode())
    with pytest.raises(ValueError, match="4 octets has 5"):
        reflect_tlvs(sent.extensions, lambda tlv: Tlv(tlv.type, bytes(5)))
    with pytest.raises(ValueError, match="take 0 octets, the request's 8"):
        reflect(sent, received_ns=NOW, sent_ns=NOW, error=REFLECTOR, ttl=1, extensions=Extensions())


@given(st.binary(max_size=100))
def test_the_tlvs_sent_back_take_the_octets_the_requests_took(data):
    extensions = parse_tlvs(data)
    back = reflect_tlvs(extensions)
    assert back.size == extensions.size
    assert len(back.encode()) == len(data)
