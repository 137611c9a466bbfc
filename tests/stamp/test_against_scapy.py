"""
echod's STAMP codec against an independent one, scapy's
C{scapy.contrib.stamp}: every kind of packet echod builds read by scapy,
and every packet scapy builds read by echod, field by field.

scapy is a test dependency wherever the suite runs: PyPI's newest in the
virtualenv (C{make venv}), Debian's python3-scapy on each release (2.5.0
on Debian 12, 2.6.1 on 13: C{make test-system}, the package build, the
root filesystem of tests/system). What scapy's codec does not know, it is
not asked: it reads a PTPv2 timestamp as one 64-bit number, and names the
TLV flags from the least significant bit (its "U" is bit 0), so flags are
compared as the octet they are.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.stamp import (
    ErrorEstimate as ScapyErrorEstimate,
)
from scapy.contrib.stamp import (
    STAMPSessionReflectorTestUnauthenticated,
    STAMPSessionSenderTestUnauthenticated,
    STAMPTestTLV,
)
from scapy.layers.inet import UDP

from echod.stamp.estimate import ErrorEstimate
from echod.stamp.packets import parse_reply, parse_request, request
from echod.stamp.reflection import reflect, reflect_tlvs
from echod.stamp.tlv import Flag, Tlv
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

#: The NTP epoch before the Unix one, by the calendar of Python's datetime: not echod's constant.
NTP_UNIX_OFFSET = (datetime(1970, 1, 1, tzinfo=UTC) - datetime(1900, 1, 1, tzinfo=UTC)) // timedelta(
    seconds=1
)
NOW = 1_796_323_920_315_393_123  # 2026-12-03, in NTP era 0 like scapy's decimal seconds
#: Every TLV type echod builds (the eight of RFC 8972, an unknown one), HMAC last as it must be.
TLVS = (
    ExtraPadding.zeros(6).tlv(),
    Location(862, 50000, (Tlv(6, bytes(4), Flag.U),)).tlv(),
    TimestampInformation(1, 2, 1, 2).tlv(),
    ClassOfService(46, 10, 2, 1).tlv(),
    DirectMeasurement(10, 9, 9).tlv(),
    AccessReport(1, 1).tlv(),
    FollowUpTelemetry(4, 0x0102030405060708, 2).tlv(),
    Tlv(222, b"not yet assigned", Flag.U),
    Hmac(bytes(range(16))).tlv(),
)


def dissect(cls: type, data: bytes):  # type: ignore[no-untyped-def]
    """
    scapy's reading of C{data} as a C{cls}. scapy 2.5 (Debian 12's) sizes
    the TLV list from the UDP header above the packet (its length less 8
    and 44) and fails on a bare packet; a parent UDP header of the right
    length serves every version (2.6 and later read the TLVs to the end).
    """
    return cls(data, _parent=UDP(len=8 + len(data)))


def same_estimate(ours: ErrorEstimate, theirs) -> bool:  # type: ignore[no-untyped-def]
    return (ours.synchronized, ours.ptp, ours.scale, ours.multiplier) == (
        theirs.S,
        theirs.Z,
        theirs.scale,
        theirs.multiplier,
    )


def same_tlvs(ours: tuple[Tlv, ...], theirs) -> bool:  # type: ignore[no-untyped-def]
    return [(int(t.flags), t.type, t.len, bytes(t.value)) for t in theirs] == [
        (tlv.flags, tlv.type, len(tlv.value), tlv.value) for tlv in ours
    ]


def ntp_ns(scapy_seconds) -> int:  # type: ignore[no-untyped-def]
    """scapy's NTP timestamp (decimal seconds since 1900) in nanoseconds since 1970."""
    return round((scapy_seconds - NTP_UNIX_OFFSET) * 10**9)


estimates = st.builds(ErrorEstimate, st.booleans(), st.booleans(), st.integers(0, 63), st.integers(1, 255))
tlv_lists = st.lists(st.sampled_from(TLVS[:-1]), max_size=4).map(tuple)


@settings(max_examples=50)
@given(
    st.integers(0, (1 << 32) - 1),
    st.integers(-(10**15), 10**15),
    estimates,
    st.integers(0, 0xFFFF),
    tlv_lists,
)
def test_scapy_reads_every_sender_packet_echod_builds(sequence, offset_ns, error, ssid, tlvs):
    packet = request(sequence, NOW + offset_ns, error, ssid, tlvs)
    theirs = dissect(STAMPSessionSenderTestUnauthenticated, packet.encode())
    assert theirs.seq == sequence
    assert theirs.fields["ts"] == packet.timestamp
    if not error.ptp:
        assert ntp_ns(theirs.ts) == NOW + offset_ns
    assert same_estimate(error, theirs.err_estimate)
    assert theirs.ssid == ssid
    assert theirs.mbz == 0
    assert same_tlvs(tlvs, theirs.tlv_objects)


def test_scapy_reads_every_tlv_type_echod_builds_in_a_sender_packet():
    packet = request(1, NOW, ErrorEstimate(), tlvs=TLVS)
    assert same_tlvs(TLVS, dissect(STAMPSessionSenderTestUnauthenticated, packet.encode()).tlv_objects)


@settings(max_examples=50)
@given(
    st.integers(0, (1 << 32) - 1),
    estimates,
    estimates,
    st.integers(0, 10**9),
    st.integers(0, 255) | st.none(),
    st.integers(0, (1 << 32) - 1) | st.none(),
    tlv_lists,
)
def test_scapy_reads_every_reflector_packet_echod_builds(
    sequence, theirs_error, ours, dwell, ttl, count, tlvs
):
    sent = parse_request(request(sequence, NOW, theirs_error, 0xABCD, tlvs).encode())

    def understood(tlv: Tlv) -> Tlv | None:
        return tlv.with_flags(0) if tlv.type == ClassOfService.TYPE else None

    reply = reflect(
        sent,
        received_ns=NOW + 1000,
        sent_ns=NOW + 1000 + dwell,
        error=ours,
        ttl=ttl,
        sequence=count,
        extensions=reflect_tlvs(sent.extensions, understood),
    )
    theirs = dissect(STAMPSessionReflectorTestUnauthenticated, reply.encode())
    assert theirs.seq == (sequence if count is None else count)
    assert (theirs.fields["ts"], theirs.fields["ts_rx"]) == (reply.timestamp, reply.received)
    if not ours.ptp:
        assert (ntp_ns(theirs.ts), ntp_ns(theirs.ts_rx)) == (NOW + 1000 + dwell, NOW + 1000)
    assert same_estimate(ours, theirs.err_estimate)
    assert theirs.ssid == 0xABCD
    assert theirs.seq_sender == sequence
    assert theirs.fields["ts_sender"] == sent.timestamp
    assert same_estimate(theirs_error, theirs.err_estimate_sender)
    assert (theirs.mbz1, theirs.ttl_sender, theirs.mbz2) == (0, ttl or 0, 0)
    assert same_tlvs(reply.extensions.tlvs, theirs.tlv_objects)
    assert [int(t.flags) for t in theirs.tlv_objects] == [
        0 if tlv.type == ClassOfService.TYPE else Flag.U for tlv in tlvs
    ]


def scapy_estimate(estimate: ErrorEstimate):  # type: ignore[no-untyped-def]
    return ScapyErrorEstimate(
        S=int(estimate.synchronized),
        Z=int(estimate.ptp),
        scale=estimate.scale,
        multiplier=estimate.multiplier,
    )


def scapy_tlvs(tlvs: tuple[Tlv, ...]) -> list:
    return [STAMPTestTLV(flags=tlv.flags, type=tlv.type, len=len(tlv.value), value=tlv.value) for tlv in tlvs]


@settings(max_examples=50)
@given(
    st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1), estimates, st.integers(0, 0xFFFF), tlv_lists
)
def test_echod_reads_every_sender_packet_scapy_builds(sequence, timestamp, error, ssid, tlvs):
    theirs = STAMPSessionSenderTestUnauthenticated(
        seq=sequence, err_estimate=scapy_estimate(error), ssid=ssid, tlv_objects=scapy_tlvs(tlvs)
    )
    theirs.fields["ts"] = timestamp  # the 64 bits themselves, in either format
    ours = parse_request(bytes(theirs))
    assert (ours.sequence, ours.timestamp, ours.error, ours.ssid) == (sequence, timestamp, error, ssid)
    assert ours.extensions.tlvs == tlvs
    assert ours.extensions.well_formed


def test_echod_reads_scapys_ntp_timestamp_as_the_instant_scapy_meant():
    theirs = STAMPSessionSenderTestUnauthenticated(ts=3_913_056_000.25)  # decimal seconds since 1900
    assert parse_request(bytes(theirs)).sent_ns() == (3_913_056_000 - NTP_UNIX_OFFSET) * 10**9 + 250_000_000


@settings(max_examples=50)
@given(
    st.integers(0, (1 << 32) - 1),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
    estimates,
    estimates,
    st.integers(0, 255),
    tlv_lists,
)
def test_echod_reads_every_reflector_packet_scapy_builds(sequence, t3, t1, error, sender_error, ttl, tlvs):
    theirs = STAMPSessionReflectorTestUnauthenticated(
        seq=sequence,
        err_estimate=scapy_estimate(error),
        ssid=7,
        seq_sender=sequence ^ 0xFFFF,
        err_estimate_sender=scapy_estimate(sender_error),
        ttl_sender=ttl,
        tlv_objects=scapy_tlvs(tlvs),
    )
    theirs.fields.update(ts=t3, ts_rx=t3 >> 1, ts_sender=t1)  # the 64 bits themselves, in either format
    ours = parse_reply(bytes(theirs))
    assert (ours.sequence, ours.timestamp, ours.received) == (sequence, t3, t3 >> 1)
    assert (ours.error, ours.ssid, ours.sender_sequence) == (error, 7, sequence ^ 0xFFFF)
    assert (ours.sender_timestamp, ours.sender_error, ours.ttl) == (t1, sender_error, ttl)
    assert ours.extensions.tlvs == tlvs
    assert ours.extensions.well_formed
