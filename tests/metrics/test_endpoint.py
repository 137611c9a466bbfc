"""
The metrics endpoint's HTTP side on Twisted's web server, driven byte by
byte through a test transport and a clock: what answers, and its bounds.
Over real sockets in a real daemon: tests/integration/test_metrics.py.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from echod.accounting.throttle import INTERVAL
from echod.metrics.collector import DaemonView, make_registry
from echod.metrics.endpoint import FIRST_BYTE_TIMEOUT, FRESH, REQUEST_TIMEOUT, MetricsPage, MetricsSite
from echod.metrics.formats import OPENMETRICS, TEXT
from echod.metrics.limits import (
    CONNECTION_RATE_PER_PEER,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    CappedFactory,
)
from tests.transports import connect

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
PROMETHEUS_ACCEPT = (
    b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class Counting:
    """A registry whose scrapes are counted."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.registry = make_registry(self.view)

    def view(self) -> DaemonView:
        self.scrapes += 1
        return DaemonView([], True, 0.0)


class Failing:
    """A collector that fails, as one reading /proc might."""

    def collect(self):
        raise OSError(24, "Too many open files")


def endpoint(registry: CollectorRegistry | None = None) -> tuple[CappedFactory, Clock]:
    clock = Clock()
    registry = registry if registry is not None else Counting().registry
    return CappedFactory(MetricsSite(MetricsPage(registry, clock), clock), clock), clock


def hosts(count: int):
    """C{count} different peers, each under its own caps."""
    return (f"198.18.{n // 250}.{n % 250 + 1}" for n in range(count))


def response(transport: StringTransport) -> tuple[str, dict[str, str], bytes]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


def scrape(factory: CappedFactory, request: bytes = GET, host: str = "127.0.0.1"):
    """One request from C{host}, answered; the connection then closed, as the transport would."""
    protocol, transport = connect(factory, host)
    protocol.dataReceived(request)
    protocol.connectionLost(Failure(ConnectionDone()))
    return response(transport)


def with_accept(accept: bytes) -> bytes:
    return b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n"


def test_get_metrics_answers_in_the_prometheus_text_format_and_closes():
    factory, _ = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(GET)
    status, headers, body = response(transport)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"echod_build_info", "echod_config_last_reload_successful", "process_open_fds"} <= names
    assert transport.disconnecting  # one request a connection


def test_the_root_answers_too_and_other_paths_are_not_found():
    factory, _ = endpoint()
    for path, expected in ((b"/", "HTTP/1.1 200 OK"), (b"/metrics?x=1", "HTTP/1.1 200 OK")):
        assert scrape(factory, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0] == expected
    for n, path in enumerate((b"/metricsx", b"/metrics/", b"/favicon.ico", b"/../etc/passwd")):
        status = scrape(factory, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n", f"198.18.0.{n + 1}")[0]
        assert status == "HTTP/1.1 404 Not Found", path


def test_methods_other_than_get_and_head_are_not_allowed():
    factory, _ = endpoint()
    for method, host in zip((b"POST", b"PUT", b"DELETE", b"OPTIONS", b"BREW"), hosts(5), strict=True):
        status, headers, _ = scrape(factory, method + b" /metrics HTTP/1.1\r\nHost: x\r\n\r\n", host)
        assert status == "HTTP/1.1 405 Method Not Allowed", method
        assert set(headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_head_answers_the_headers_of_get_without_a_body_or_a_log_line():
    factory, _ = endpoint()
    _, got, page = scrape(factory)
    with capturedLogs() as events:
        status, headers, body = scrape(factory, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == ("HTTP/1.1 200 OK", b"")
    assert headers["content-type"] == got["content-type"]
    assert int(headers["content-length"]) == len(page)
    assert events == []


def test_a_request_with_a_body_is_refused_and_the_body_never_read():
    factory, _ = endpoint()
    for framing in (b"Content-Length: 1000000000\r\n", b"Transfer-Encoding: chunked\r\n"):
        protocol, transport = connect(factory)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + b"x" * 60000)
        status, _, body = response(transport)
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert body == b""
        assert transport.disconnecting


def test_one_request_a_connection_however_many_are_pipelined():
    factory, _ = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(GET * 1800)  # a 64 KiB read of them
    assert transport.value().count(b"HTTP/1.1 ") == 1
    assert response(transport)[1]["connection"] == "close"
    assert transport.disconnecting  # the transport reads no more


def test_a_request_head_sent_a_line_at_a_time_is_cut_off_at_the_deadline():
    factory, clock = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n")
    # Each line would restart Twisted's own idle timeout; the deadline holds from the start.
    for _ in range(int(REQUEST_TIMEOUT) - 1):
        clock.advance(1)
        protocol.dataReceived(b"X-Slow: 1\r\n")
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and transport.disconnected  # aborted, without an answer
    assert transport.value() == b""


def test_a_connection_that_sends_nothing_is_dropped_at_the_first_byte_deadline():
    factory, clock = endpoint()
    _, idle_transport = connect(factory)
    talking, talking_transport = connect(factory, port=40001)
    clock.advance(FIRST_BYTE_TIMEOUT / 2)
    talking.dataReceived(b"G")
    clock.advance(FIRST_BYTE_TIMEOUT / 2)
    assert idle_transport.disconnected and idle_transport.value() == b""
    assert not talking_transport.disconnecting  # one byte in: the whole request's deadline holds
    clock.advance(REQUEST_TIMEOUT - FIRST_BYTE_TIMEOUT - 0.01)
    assert not talking_transport.disconnecting
    clock.advance(0.01)
    assert talking_transport.disconnected


def test_an_answer_left_unread_is_dropped_at_the_deadline():
    # The transport keeps what it could not send (a client that does not read):
    # the close after the answer waits on it, the deadline does not.
    factory, clock = endpoint()
    protocol, transport = connect(factory)
    protocol.dataReceived(GET)
    assert transport.disconnecting and not transport.disconnected
    clock.advance(REQUEST_TIMEOUT)
    assert transport.disconnected


def test_connections_beyond_the_cap_are_refused_until_one_closes():
    factory, _ = endpoint()
    held = [connect(factory, host) for host in hosts(MAX_CONNECTIONS)]
    assert all(protocol is not None for protocol, _ in held)
    assert connect(factory, "198.18.9.9") == (None, None)
    held[0][0].connectionLost(Failure(ConnectionDone()))
    assert connect(factory, "198.18.9.9")[0] is not None


def test_one_address_holds_at_most_its_share_of_the_connections():
    factory, _ = endpoint()
    held = [connect(factory, "127.0.0.1", 40000 + n) for n in range(MAX_CONNECTIONS)]
    admitted = [protocol for protocol, _ in held if protocol is not None]
    assert len(admitted) == MAX_CONNECTIONS_PER_PEER < MAX_CONNECTIONS
    assert scrape(factory, host="127.0.0.2")[0] == "HTTP/1.1 200 OK"  # another address gets in
    admitted[0].connectionLost(Failure(ConnectionDone()))
    assert connect(factory, "127.0.0.1", 50000)[0] is not None
    # An IPv6 host is its /64: the addresses one machine may pick from count as one.
    v6 = [connect(factory, f"2001:db8:1:2::{n + 1}")[0] for n in range(MAX_CONNECTIONS_PER_PEER + 1)]
    assert v6[-1] is None and None not in v6[:-1]


def test_new_connections_from_one_address_are_held_to_a_rate():
    factory, clock = endpoint()
    answered = 0
    for n in range(CONNECTION_RATE_PER_PEER * 3):
        protocol, transport = connect(factory, "127.0.0.1", 40000 + n)
        if protocol is not None:
            protocol.dataReceived(GET)
            answered += response(transport)[0] == "HTTP/1.1 200 OK"
            protocol.connectionLost(Failure(ConnectionDone()))
    assert answered == CONNECTION_RATE_PER_PEER  # its burst
    assert scrape(factory, host="127.0.0.2")[0] == "HTTP/1.1 200 OK"  # others unaffected
    clock.advance(1 / CONNECTION_RATE_PER_PEER)
    assert scrape(factory, host="127.0.0.1")[0] == "HTTP/1.1 200 OK"
    assert connect(factory, "127.0.0.1") == (None, None)


def test_refusals_are_logged_once_then_summed_up():
    factory, clock = endpoint()
    with capturedLogs() as events:
        for n in range(CONNECTION_RATE_PER_PEER + 50):
            protocol, _ = connect(factory, "127.0.0.1", 40000 + n)
            if protocol is not None:
                protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(INTERVAL)
    lines = [event["log_format"].format(**event) for event in events]
    assert len(lines) == 2, lines
    assert "metrics: refusing new connections from 127.0.0.1" in lines[0]
    assert f"more than {CONNECTION_RATE_PER_PEER} new ones a second from it" in lines[0]
    assert "49 more" in lines[1]


def test_a_page_is_rendered_at_most_once_per_interval_however_often_asked():
    counting = Counting()
    factory, clock = endpoint(counting.registry)
    for host in hosts(50):
        assert scrape(factory, host=host)[0] == "HTTP/1.1 200 OK"
    assert counting.scrapes == 1
    clock.advance(FRESH)
    scrape(factory)
    assert counting.scrapes == 2


def test_openmetrics_when_prometheus_asks_for_it():
    factory, _ = endpoint()
    _, headers, body = scrape(factory, with_accept(PROMETHEUS_ACCEPT))
    assert headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith(b"# EOF\n")


def test_the_content_type_is_one_of_two_whatever_the_accept_and_renders_stay_bounded():
    counting = Counting()
    factory, _ = endpoint(counting.registry)
    accepts = [b"application/openmetrics-text; version=%d" % n for n in range(60)]
    accepts += [b"application/openmetrics-text; version=ANY%d; q=0.%d" % (n, n % 10) for n in range(60)]
    accepts += [b"text/plain; version=1.0.0; escaping=%d" % n for n in range(60)]
    seen = set()
    for accept, host in zip(accepts, hosts(len(accepts)), strict=True):
        status, headers, _ = scrape(factory, with_accept(accept), host)
        assert status == "HTTP/1.1 200 OK", accept
        seen.add(headers["content-type"])
    assert seen <= {TEXT.content_type.decode(), OPENMETRICS.content_type.decode()}
    assert counting.scrapes <= 2  # one page a format, not one an Accept


def test_a_malformed_accept_gets_the_text_format_and_logs_nothing():
    factory, _ = endpoint()
    accepts = [
        b"application/openmetrics-text; version=x",
        b"application/openmetrics-text;version=1.0.0;q=x",
        b"application/openmetrics-text;version=",
        b'application/openmetrics-text;version="1.0.0',
        b"application/openmetrics-text;=;",
        b"application/openmetrics-text;version=1.0.0 ;q=0.5 5",
        b"\xff\xfe/\x7f",
        b"text/plain; version=0.0.4; q=1.5",
    ]
    with capturedLogs() as events:
        for accept, host in zip(accepts, hosts(len(accepts)), strict=True):
            status, headers, body = scrape(factory, with_accept(accept), host)
            assert status == "HTTP/1.1 200 OK", accept
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", accept
            assert b"echod_build_info" in body
    assert events == []


def test_a_failing_render_is_a_500_logged_once_without_a_traceback():
    registry = Counting().registry
    registry.register(Failing())
    factory, clock = endpoint(registry)
    with capturedLogs() as events:
        for host in hosts(30):
            status, headers, body = scrape(factory, with_accept(b"x\x01secret"), host)
            assert status == "HTTP/1.1 500 Internal Server Error"
            assert headers["connection"] == "close"
            assert b"Traceback" not in body and b"secret" not in body
        clock.advance(INTERVAL)
    assert not [event for event in events if "log_failure" in event]
    lines = [event["log_format"].format(**event) for event in events]
    assert len(lines) == 2, lines
    assert {event["log_level"] for event in events} == {LogLevel.error}
    assert "metrics: cannot render the metrics: OSError: [Errno 24] Too many open files" in lines[0]
    assert "29 more" in lines[1]
    assert not any("secret" in line or "x\x01" in line for line in lines)
