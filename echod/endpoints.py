"""
The grammar of addresses and ADDRESS:PORT values in the configuration file,
with errors that give a correct example built from what was written.

An IPv6 address is full of colons, so which colon starts a port is a
matter of brackets (C{[::1]:9207}); the mistakes admins make are the missing
port, the missing brackets and a port written into an address key, and each
gets its own message.
"""

from __future__ import annotations

import ipaddress

#: The port the examples in messages use when the text gives none.
EXAMPLE_PORT = 9207


def address(text: str) -> str:
    """An IPv4 or IPv6 address (brackets around it allowed), in its compressed form."""
    try:
        return ipaddress.ip_address(text.strip("[]")).compressed
    except ValueError:
        pass
    split = _split(text)
    if split is not None and _is_address(split[0]) and _digits(split[1]):
        raise ValueError(
            f"{text!r} is an address and a port; write address = {_bare(split[0])} and port = {split[1]}"
        )
    raise ValueError(
        f"{text!r} is not an IP address; write an IPv4 or IPv6 address such as 127.0.0.1 "
        "or ::1 (:: means every address, IPv4 and IPv6; host names are not resolved)"
    )


def port(low: int, high: int, text: str) -> int:
    """A listener's port, C{low} to C{high}; an ADDRESS:PORT written here is told apart."""
    if _digits(text):
        value = int(text)
        if low <= value <= high:
            return value
        raise ValueError(f"{value} is out of range; expected {low} to {high}")
    split = _split(text)
    if split is not None and _is_address(split[0]) and _digits(split[1]):
        raise ValueError(
            f"{text!r} is an address and a port; write address = {_bare(split[0])} and port = {split[1]}"
        )
    raise ValueError(f"{text!r} is not a whole number; expected {low} to {high}")


def endpoint(text: str) -> tuple[str, int]:
    """
    C{ADDRESS:PORT}, an IPv6 address in brackets (C{[::1]:9207}), the port
    0 to 65535: as (the address compressed, the port).
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: no ']' after the IPv6 address; write e.g. [::1]:{EXAMPLE_PORT}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return _missing_port(text, host)
        if not rest.startswith(":"):
            raise ValueError(
                f"{text!r}: only ':PORT' may follow ']'; write e.g. [{host or '::1'}]:{EXAMPLE_PORT}"
            )
        port_text = rest[1:]
    elif text.count(":") > 1:
        return _unbracketed(text)
    elif ":" in text:
        host, _, port_text = text.partition(":")
    else:
        return _missing_port(text, text)
    if not host:
        raise ValueError(
            f"{text!r}: the address is missing; write e.g. 127.0.0.1:{port_text or EXAMPLE_PORT} "
            f"or [::1]:{port_text or EXAMPLE_PORT}"
        )
    if not port_text:
        return _missing_port(text, host)
    return address(host), _endpoint_port(text, port_text)


def _missing_port(text: str, host: str) -> tuple[str, int]:
    if _digits(host):
        raise ValueError(
            f"{text!r}: the address is missing; write e.g. 127.0.0.1:{host} or [::1]:{host}, "
            "or leave it empty for off"
        )
    if not _is_address(host):
        address(host)  # says what is wrong with it
    example = f"[{host}]" if ":" in host else host
    raise ValueError(f"{text!r}: the port is missing; write e.g. {example}:{EXAMPLE_PORT}")


def _unbracketed(text: str) -> tuple[str, int]:
    """An IPv6 address without brackets, perhaps with a port after it: say which to write."""
    host, _, port_text = text.rpartition(":")
    split = _is_address(host) and _digits(port_text) and int(port_text) <= 65535
    if _is_address(text):
        if split:
            raise ValueError(
                f"{text!r}: write an IPv6 address in brackets and the port after them: "
                f"[{host}]:{port_text}, or [{text}]:{EXAMPLE_PORT} if {text} is the address"
            )
        return _missing_port(text, text)
    if split:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [{host}]:{port_text}")
    raise ValueError(
        f"{text!r} is not ADDRESS:PORT; write e.g. 127.0.0.1:{EXAMPLE_PORT} or [::1]:{EXAMPLE_PORT}, "
        "or leave it empty for off"
    )


def _endpoint_port(text: str, port_text: str) -> int:
    if not _digits(port_text):
        raise ValueError(f"{text!r}: the port {port_text!r} is not a whole number; expected 0 to 65535")
    if int(port_text) > 65535:
        raise ValueError(f"{text!r}: the port {int(port_text)} is out of range; expected 0 to 65535")
    return int(port_text)


def _split(text: str) -> tuple[str, str] | None:
    """(address, port) of C{A:P} or C{[A]:P}, unchecked; C{None} if it has no such shape."""
    if text.startswith("[") and "]:" in text:
        host, _, port_text = text[1:].partition("]:")
        return host, port_text
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return host, port_text
    return None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _bare(host: str) -> str:
    return ipaddress.ip_address(host).compressed
