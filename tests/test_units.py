import pytest

from echod.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("512", 512),
        ("512b", 512),
        ("64K", 65536),
        ("16M", 16 << 20),
        ("16MiB", 16 << 20),
        ("2g", 2 << 30),
        ("1T", 1 << 40),
        (" 3 KB ", 3072),
    ],
)
def test_size_accepts_bytes_and_binary_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5M", "16X", "16 M M", "0x10", "16iB"])
def test_size_rejects_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("300s", 300), ("5m", 300), ("1h", 3600), ("2d", 172800), ("250ms", 0.25), ("1.5s", 1.5), ("10", 10)],
)
def test_duration_accepts_seconds_and_units(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "s", "-5s", "5 minutes", "5y", "1e3"])
def test_duration_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "text"), [(16 << 20, "16M"), (1000, "1000"), (3 << 10, "3K"), (0, "0")])
def test_format_size_uses_the_largest_exact_unit(value, text):
    assert format_size(value) == text


@pytest.mark.parametrize(("value", "text"), [(300, "5m"), (10, "10s"), (0.25, "250ms"), (90.5, "90.5s")])
def test_format_duration_round_trips(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == value
