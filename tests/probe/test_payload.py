from echod.probe.payload import compare_whole, make_payload
from tests.probe.helpers import KEY, expected


def test_every_payload_is_its_sequence_number_then_bytes_unique_to_run_and_probe():
    payloads = {make_payload(KEY, seq, 64) for seq in range(1, 1001)}
    assert len(payloads) == 1000
    assert make_payload(KEY, 258, 64)[:8] == (258).to_bytes(8, "big")
    assert make_payload(KEY, 1, 64) == make_payload(KEY, 1, 64)
    assert make_payload(KEY, 1, 64) != make_payload(b"j" * 16, 1, 64)
    assert len(make_payload(KEY, 1, 65527)) == 65527
    assert make_payload(KEY, 258, 2) == b"\x01\x02"  # shorter than the number: its low bytes


def test_a_whole_answer_is_compared_byte_by_byte_and_by_length():
    sent = expected(1)
    assert not compare_whole(sent, sent)
    flipped = bytearray(sent)
    flipped[10] ^= 0xFF
    flipped[20] ^= 0x01
    mismatch = compare_whole(sent, bytes(flipped))
    assert (mismatch.count, mismatch.first, mismatch.got, mismatch.wanted) == (
        2,
        10,
        sent[10] ^ 0xFF,
        sent[10],
    )
    assert compare_whole(sent, sent[:60]).describe(64) == "4 bytes short"
    assert compare_whole(sent, sent + b"xy").describe(64) == "2 bytes more than sent"
