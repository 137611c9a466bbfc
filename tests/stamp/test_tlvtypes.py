"""
The Values of RFC 8972's eight TLV types (L{echod.stamp.tlvtypes}): each
field at the bits the RFC's figures give it, and every Value of the right
length read and written back unchanged.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.tlv import FIXED_LENGTH, Flag, Tlv, TlvType, parse_tlvs
from echod.stamp.tlvtypes import (
    BY_TYPE,
    AccessId,
    AccessReport,
    ClassOfService,
    DirectMeasurement,
    ExtraPadding,
    FollowUpTelemetry,
    Hmac,
    Location,
    SyncSource,
    TimestampInformation,
    TimestampMethod,
    decoded,
    typed,
)


def test_every_type_of_rfc_8972_has_its_value():
    assert sorted(BY_TYPE) == list(range(1, 9))
    assert all(BY_TYPE[kind].TYPE == kind for kind in TlvType)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        # DSCP1 EF 101110, DSCP2 AF11 001010, ECN ECT(0) 10, RP 01, then 16 reserved bits.
        (ClassOfService(46, 10, 2, 1), bytes((0b10111000, 0b10101001, 0, 0))),
        (ClassOfService(dscp1=63, reserved=0xBEEF), b"\xfc\x00\xbe\xef"),
        (DirectMeasurement(1, 0x02030405, 0xFFFFFFFF), b"\x00\x00\x00\x01\x02\x03\x04\x05\xff\xff\xff\xff"),
        # ID in the top 4 bits, 4 reserved bits, the Return Code, 16 reserved bits.
        (AccessReport(AccessId.NON_THREE_GPP, 1), b"\x20\x01\x00\x00"),
        (AccessReport(1, 2, reserved_bits=0xF, reserved=1), b"\x1f\x02\x00\x01"),
        (
            FollowUpTelemetry(9, 0x0102030405060708, TimestampMethod.HW_ASSIST),
            b"\x00\x00\x00\x09\x01\x02\x03\x04\x05\x06\x07\x08\x01\x00\x00\x00",
        ),
        (
            TimestampInformation(
                SyncSource.NTP, TimestampMethod.SW_LOCAL, SyncSource.PTP, TimestampMethod.CONTROL_PLANE
            ),
            b"\x01\x02\x02\x03",
        ),
        (Location(862, 0xABCD), b"\x03\x5e\xab\xcd"),
        (
            Location(1, 2, (Tlv(6, b"\xc6\x12\x00\x01", Flag.U),)),
            b"\x00\x01\x00\x02\x80\x06\x00\x04\xc6\x12\x00\x01",
        ),
        (Hmac(bytes(range(16))), bytes(range(16))),
        (ExtraPadding(b"xyz"), b"xyz"),
    ],
    ids=lambda item: type(item).__name__ if not isinstance(item, bytes) else "",
)
def test_each_field_is_where_the_rfc_puts_it(value, wire):
    assert value.value() == wire
    assert typed(value.tlv()) == value
    assert value.tlv().encode() == bytes((Flag.U, value.TYPE)) + len(wire).to_bytes(2, "big") + wire


def test_a_tlv_is_made_under_the_flags_a_sender_sends_unless_told():
    assert ClassOfService().tlv().flags == Flag.U
    assert ClassOfService().tlv(flags=0).flags == 0
    assert type(ClassOfService().tlv().type) is int


def test_padding_of_zeros():
    assert ExtraPadding.zeros(5).tlv().encode() == b"\x80\x01\x00\x05" + bytes(5)


@pytest.mark.parametrize("kind", sorted(FIXED_LENGTH))
def test_every_fixed_size_value_comes_back_unchanged(kind):
    @given(st.binary(min_size=FIXED_LENGTH[kind], max_size=FIXED_LENGTH[kind]))
    def check(value):
        assert BY_TYPE[kind].decode(value).value() == value

    check()


sub_tlvs = st.lists(
    st.builds(Tlv, st.integers(0, 255), st.binary(max_size=20), st.integers(0, 255)), max_size=4
).map(lambda tlvs: b"".join(tlv.encode() for tlv in tlvs))


@pytest.mark.parametrize("kind", [TlvType.LOCATION, TlvType.TIMESTAMP_INFORMATION])
def test_every_value_with_whole_sub_tlvs_comes_back_unchanged(kind):
    @given(st.binary(min_size=4, max_size=4), sub_tlvs)
    def check(head, tail):
        value = BY_TYPE[kind].decode(head + tail)
        assert value.value() == head + tail

    check()


@given(st.binary(max_size=64))
def test_padding_comes_back_unchanged(padding):
    assert ExtraPadding.decode(padding).value() == padding


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClassOfService(dscp1=64),
        lambda: ClassOfService(ecn=4),
        lambda: ClassOfService(rp=-1),
        lambda: DirectMeasurement(1 << 32),
        lambda: AccessReport(access_id=16),
        lambda: FollowUpTelemetry(timestamp=1 << 64),
        lambda: TimestampInformation(sync_in=256),
        lambda: Location(destination_port=65536),
        lambda: Hmac(bytes(15)),
    ],
)
def test_a_field_out_of_its_bits_is_refused(make):
    with pytest.raises(ValueError):
        make()


def test_a_type_rfc_8972_does_not_define_has_no_typed_value():
    assert typed(Tlv(9, b"anything")) is None


def test_a_value_that_does_not_fit_its_type_is_refused():
    with pytest.raises(ValueError, match="4-octet"):
        typed(Tlv(TlvType.CLASS_OF_SERVICE, b"abc"))
    with pytest.raises(ValueError, match="at least 4"):
        typed(Tlv(TlvType.LOCATION, b"abc"))
    with pytest.raises(ValueError, match="sub-TLVs"):
        typed(Tlv(TlvType.LOCATION, bytes(4) + b"\x00\x01"))


def test_each_tlv_of_a_list_comes_with_its_value_none_for_the_unknown_and_the_malformed():
    tlvs = [
        ClassOfService(46).tlv(),
        Tlv(200, b"?"),
        Tlv(TlvType.DIRECT_MEASUREMENT, bytes(11)),
        Hmac().tlv(),
    ]
    pairs = decoded(parse_tlvs(b"".join(tlv.encode() for tlv in tlvs)))
    assert pairs == (
        (tlvs[0], ClassOfService(46)),
        (tlvs[1], None),
        (tlvs[2], None),
        (tlvs[3], Hmac()),
    )
