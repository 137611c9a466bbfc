"""
The TLV format of RFC 8972 §4 (L{echod.stamp.tlv}): headers, flags, and a
list read to its end or its first break, every fault said (which TLV, where,
why) and nothing raised, whatever the octets.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.tlv import (
    FIXED_LENGTH,
    NONE,
    Flag,
    Malformed,
    Problem,
    Tlv,
    TlvType,
    parse_sub_tlvs,
    parse_tlvs,
)
from echod.stamp.tlvtypes import (
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Hmac,
    Location,
    TimestampInformation,
)

#: One TLV of every type RFC 8972 defines, as echod builds them, and one of a type it does not.
EVERY_KIND = [
    ExtraPadding(b"\x01\x02\x03").tlv(),
    Location(862, 40000, (Tlv(5, bytes(16), Flag.U),)).tlv(),
    TimestampInformation(1, 2, 1, 2).tlv(),
    ClassOfService(46, 0, 0, 0).tlv(),
    DirectMeasurement(1, 2, 3).tlv(),
    AccessReport(1, 1).tlv(),
    FollowUpTelemetry(7, 1 << 63, 2).tlv(),
    Tlv(200, b"unknown", Flag.U),
    Hmac(bytes(range(16))).tlv(),  # last, as RFC 8972 §4.8 wants it
]


def test_a_tlv_is_flags_type_a_16_bit_length_and_the_value():
    assert Tlv(4, b"abcd", Flag.U).encode() == b"\x80\x04\x00\x04abcd"
    assert Tlv(1, bytes(300)).encode()[:4] == b"\x00\x01\x01\x2c"


def test_the_flags_are_the_top_three_bits():
    assert (Flag.U, Flag.M, Flag.I) == (0x80, 0x40, 0x20)
    tlv = Tlv(1, b"", Flag.M | Flag.I)
    assert (tlv.unrecognized, tlv.malformed, tlv.integrity_failed) == (False, True, True)


def test_reserved_flag_bits_are_kept_as_received():
    (tlv,) = parse_tlvs(b"\x9f\x01\x00\x00").tlvs
    assert tlv.flags == 0x9F
    assert tlv.unrecognized
    assert tlv.encode() == b"\x9f\x01\x00\x00"


@pytest.mark.parametrize(
    ("kind", "flags", "value"), [(256, 0, b""), (-1, 0, b""), (1, 256, b""), (1, 0, bytes(65536))]
)
def test_what_the_header_cannot_say_is_refused(kind, flags, value):
    with pytest.raises(ValueError):
        Tlv(kind, value, flags)


def test_no_octets_are_no_tlvs_and_no_fault():
    assert parse_tlvs(b"") == NONE
    assert NONE.well_formed and NONE.size == 0


def test_every_kind_is_read_back_in_order():
    data = b"".join(tlv.encode() for tlv in EVERY_KIND)
    extensions = parse_tlvs(data)
    assert extensions.tlvs == tuple(EVERY_KIND)
    assert extensions.well_formed
    assert extensions.encode() == data


@pytest.mark.parametrize("tlv", EVERY_KIND, ids=lambda tlv: f"type{tlv.type}")
def test_every_cut_of_a_tlv_is_said_where_and_why(tlv):
    whole = tlv.encode()
    for cut in range(len(whole) + 1):
        extensions = parse_tlvs(whole[:cut])
        assert extensions.encode() == whole[:cut]
        if cut == 0:
            assert extensions == NONE
        elif cut < 4:
            assert extensions.tlvs == ()
            assert extensions.malformed == (
                Malformed(
                    0,
                    0,
                    None if cut == 1 else tlv.type,
                    Problem.SHORT_HEADER,
                    f"{cut} octet{'s' * (cut > 1)} left, a header has 4",
                ),
            )
        elif cut < len(whole):
            assert extensions.tlvs == ()
            assert extensions.malformed == (
                Malformed(
                    0, 0, tlv.type, Problem.BEYOND_END, f"Length {len(tlv.value)}, {cut - 4} octets left"
                ),
            )
        else:
            assert extensions.tlvs == (tlv,)
            assert extensions.well_formed


@pytest.mark.parametrize("kind", sorted(FIXED_LENGTH))
@pytest.mark.parametrize("change", [-1, 1])
def test_a_fixed_size_type_of_another_length_is_malformed_and_the_tlvs_around_it_still_read(kind, change):
    length = FIXED_LENGTH[kind] + change
    before, wrong, after = Tlv(1, b"pad", Flag.U), Tlv(kind, bytes(length), Flag.U), Tlv(1, b"", Flag.U)
    tlvs = (before, wrong) if kind == TlvType.HMAC else (before, wrong, after)  # an HMAC TLV is last
    extensions = parse_tlvs(b"".join(tlv.encode() for tlv in tlvs))
    assert extensions.tlvs == tlvs
    assert extensions.malformed == (
        Malformed(1, 7, kind, Problem.WRONG_LENGTH, f"Length {length}, type {kind} has {FIXED_LENGTH[kind]}"),
    )
    assert extensions.faulty() == {1}


@pytest.mark.parametrize("kind", [TlvType.LOCATION, TlvType.TIMESTAMP_INFORMATION])
def test_a_type_with_sub_tlvs_needs_its_four_octets_and_whole_sub_tlvs(kind):
    short = parse_tlvs(Tlv(kind, b"\x00\x00\x00").encode())
    assert short.malformed[0].problem is Problem.WRONG_LENGTH
    cut_sub_tlv = parse_tlvs(Tlv(kind, bytes(4) + b"\x80\x05\x00\x10" + bytes(15)).encode(), 0)
    (fault,) = cut_sub_tlv.malformed
    assert (fault.index, fault.problem) == (0, Problem.BAD_SUB_TLVS)
    assert fault.detail == (
        "sub-TLV 0 (type 5) at octet 4: its Length runs past the end: Length 16, 15 octets left of its value"
    )
    assert parse_tlvs(Tlv(kind, bytes(4) + Tlv(5, bytes(16)).encode()).encode()).well_formed


def test_sub_tlv_types_are_not_read_as_tlv_types():
    # Sub-TLV type 4 has a registry of its own: it is no Class of Service of the wrong length.
    assert parse_sub_tlvs(Tlv(4, bytes(16)).encode()).well_formed


def test_an_hmac_tlv_must_be_last_which_is_said_but_not_malformed():
    hmac = Hmac().tlv()
    extensions = parse_tlvs(hmac.encode() + Tlv(1, b"").encode())
    assert [(fault.index, fault.problem) for fault in extensions.malformed] == [(0, Problem.HMAC_NOT_LAST)]
    assert extensions.faulty() == frozenset()
    assert parse_tlvs(Tlv(1, b"").encode() + hmac.encode()).well_formed
    assert parse_tlvs(hmac.encode() + b"\x00").malformed[0].problem is Problem.HMAC_NOT_LAST


def test_offsets_count_from_the_start_of_the_packet():
    packet = bytes(44) + Tlv(1, b"ab").encode() + Tlv(4, b"abc").encode() + b"\x80"
    extensions = parse_tlvs(packet, 44)
    assert [(fault.index, fault.offset) for fault in extensions.malformed] == [(1, 50), (2, 57)]
    assert (
        str(extensions.malformed[0])
        == "TLV 1 (type 4) at octet 50: its Length is not its type's: Length 3, type 4 has 4"
    )
    assert (
        str(extensions.malformed[1]) == "TLV 2 at octet 57: no whole TLV header: 1 octet left, a header has 4"
    )


def test_random_padding_reads_as_a_tlv_running_past_the_end():
    extensions = parse_tlvs(bytes.fromhex("5e1f9a3c77c2"))
    assert extensions.tlvs == ()
    assert extensions.malformed == (Malformed(0, 0, 0x1F, Problem.BEYOND_END, "Length 39484, 2 octets left"),)
    assert extensions.trailing == bytes.fromhex("5e1f9a3c77c2")


@given(st.binary(max_size=200), st.integers(0, 8))
def test_any_octets_are_read_without_raising_and_encode_back_to_themselves(data, start):
    start = min(start, len(data))
    extensions = parse_tlvs(data, start)
    assert extensions.encode() == data[start:]
    assert extensions.size == len(data) - start
    assert [fault.index for fault in extensions.malformed] == sorted(
        fault.index for fault in extensions.malformed
    )
    assert all(start <= fault.offset < len(data) for fault in extensions.malformed)
    assert bool(extensions.trailing) == any(
        f.problem in (Problem.SHORT_HEADER, Problem.BEYOND_END) for f in extensions.malformed
    )
