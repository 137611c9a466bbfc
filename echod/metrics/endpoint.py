"""
The metrics endpoint: C{GET /metrics} (and C{/}) in the Prometheus text
format, or OpenMetrics when the scraper asks for it (L{echod.metrics.formats}),
served by Twisted's web server in the daemon's own reactor.

It shares that reactor with the echo listeners, so it is bounded:

  - one request a connection (C{Connection: close}): a client that pipelines
    requests and reads no answer gets one answer, and at most one page waits
    unsent for it, until its deadline;
  - each connection has L{FIRST_BYTE_TIMEOUT} seconds to send its first byte
    and L{REQUEST_TIMEOUT} from its start to send its whole request and take
    the answer, however it trickles; then it is cut off;
  - at most L{MAX_CONNECTIONS} connections at once, L{MAX_CONNECTIONS_PER_PEER}
    of them from one address (an IPv6 /64), and L{CONNECTION_RATE_PER_PEER}
    new ones a second from an address; the ones beyond are closed as they come,
    with a warning (throttled, L{echod.accounting.throttle});
  - no request body, headers as small as Twisted's web server allows (16 KiB);
  - a page rendered at most once every L{FRESH} seconds per format however
    often it is asked for, and no request that can log a traceback: a render
    that fails is a 500, and one error line (throttled).

No label or value ever holds a byte a client sent, nor does any header of
the answer.

echod binds the port itself (it is unprivileged, so the service needs no
capability for it), rather than taking it from systemd: a reload can then
turn it on, off or move it, as C{/etc/echod.conf} says, without restarting
echod.socket. While echod restarts, the metrics port is closed: Prometheus
sees the scrape fail, which is the truth.
"""

from __future__ import annotations

from prometheus_client.registry import CollectorRegistry
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echod.accounting.alerts import Alerts
from echod.accounting.descriptors import DescriptorShortage
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import host_port
from echod.metrics.formats import TEXT, Format, choose
from echod.metrics.limits import CappedFactory, adopt_paced_port
from echod.sockets import BindError, bind_stream

#: Seconds a connection has to send its first byte: a scraper sends its request at once.
FIRST_BYTE_TIMEOUT = 2.0
#: Seconds a connection may last from its start: to send a whole request and take the answer.
REQUEST_TIMEOUT = 10.0
#: Seconds a rendered page is served again to whoever else asks: scrapes cost the reactor at
#: most a few renders a second, however many come.
FRESH = 0.25
#: The paths that answer.
PATHS = (b"/metrics", b"/")

log = Logger(namespace="echod.metrics.endpoint")


class MetricsPage(Resource):
    """The metrics of C{registry}, at L{PATHS}; any other path is 404, any method but GET or HEAD 405."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, clock: IReactorTime) -> None:
        super().__init__()
        self._registry = registry
        self._clock = clock
        #: By format (two at most): when it was rendered, and the page.
        self._pages: dict[Format, tuple[float, bytes]] = {}

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            # Twisted's own answer would be 501 for methods it does not know.
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"only GET and HEAD\n"
        return super().render(request)

    def render_HEAD(self, request: Request) -> bytes:
        # Twisted's server would drop the body itself, but log a line each time it does.
        page = self.render_GET(request)
        request.setHeader(b"content-length", b"%d" % len(page))
        return b""

    def render_GET(self, request: Request) -> bytes:
        if request.path not in PATHS:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: the metrics are at /metrics\n"
        accepted = request.requestHeaders.getRawHeaders(b"accept")
        format_ = choose(b",".join(accepted)) if accepted else TEXT
        now = self._clock.seconds()
        rendered, page = self._pages.get(format_, (None, b""))
        if rendered is None or not 0 <= now - rendered < FRESH:
            page = format_.render(self._registry)
            self._pages[format_] = (now, page)
        request.setHeader(b"content-type", format_.content_type)
        return page


class _Request(Request):
    """
    A request that may have no body (reading one would hold memory or a
    temporary file for nothing), and whose failure logs no traceback.
    """

    def gotLength(self, length: int | None) -> None:
        if length != 0:  # a Content-Length, or chunked (None)
            self.channel.transport.write(
                b"HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            # Twisted stops reading, and the parser stops at once once the transport is disconnecting.
            self.channel.loseConnection()
            length = 0
        super().gotLength(length)

    def processingFailed(self, reason: Failure) -> None:
        """
        Answer 500, and say what failed in one line, throttled: Twisted's own
        would log a traceback a request, as fast as a client can ask.
        """
        self.site.render_failed(reason)
        body = b"the metrics could not be rendered: see echod's log\n"
        self.setResponseCode(500)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()


class _Channel(HTTPChannel):
    """
    Twisted's HTTP/1.1 channel, for one request, within deadlines: Twisted's
    own idle timeout restarts on every header line, so a client sending one
    line at a time could hold its connection as long as it liked, and its
    keep-alive answers a whole read of pipelined requests in one go, however
    few the client reads.
    """

    _deadline = None
    _first_byte = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # callLater: the site's reactor's, set by HTTPFactory.buildProtocol (Twisted 22.4 to 26.10).
        self._deadline = self.callLater(REQUEST_TIMEOUT, self._too_slow)
        self._first_byte = self.callLater(FIRST_BYTE_TIMEOUT, self._too_slow)

    def dataReceived(self, data: bytes) -> None:
        if self._first_byte is not None:
            self._first_byte.cancel()
            self._first_byte = None
        super().dataReceived(data)

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        # One request a connection: whatever else was sent on it is never read. The
        # deadline then stays, for the answer: a client that does not read it is cut off.
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return False

    def connectionLost(self, reason: object) -> None:
        for timer in (self._deadline, self._first_byte):
            if timer is not None and timer.active():
                timer.cancel()
        self._deadline = self._first_byte = None
        super().connectionLost(reason)

    def _too_slow(self) -> None:
        self._deadline = self._first_byte = None
        self.transport.abortConnection()


class MetricsSite(Site):
    """
    The site of one L{MetricsPage}: bounded channels, no request log (a line
    per scrape), and render failures told once an interval.
    """

    protocol = _Channel
    requestFactory = _Request
    noisy = False
    displayTracebacks = False

    def __init__(self, page: MetricsPage, reactor: IReactorTime) -> None:
        # No idle timeout of Twisted's own: each channel's deadline covers it.
        super().__init__(page, timeout=None, reactor=reactor)
        self._failures = WarningThrottle(reactor, self._summarise)

    def log(self, request: Request) -> None:
        pass

    def render_failed(self, reason: Failure) -> None:
        """Say, throttled, that rendering failed and why: no traceback, no byte of the request."""
        if self._failures.allow():
            # The error's own words, in repr's quoting: its text may not break the log line.
            error = f"{reason.type.__name__}: {reason.getErrorMessage()}"
            log.error("metrics: cannot render the metrics: {error}", error=ascii(error)[1:-1][:300])

    def _summarise(self, summary: Summary) -> None:
        log.error("metrics: ... and {summary}", summary=summary.describe("failed renders"))

    def stopFactory(self) -> None:
        self._failures.flush()
        super().stopFactory()


def url(address: str, port: int) -> str:
    """Where the metrics are, e.g. C{http://127.0.0.1:9207/metrics}."""
    return f"http://{host_port(address, port)}/metrics"


class _Owner:
    """What the port's connections dropped for want of descriptors count against: no listener's counters."""

    name = "metrics"
    stats = None
    access_log = None


class MetricsEndpoint(Service):
    """
    The metrics port: listening where the configuration says (C{None}: off),
    and moved, opened or closed by L{move} on reload.

    A child service of the daemon's, beside its listeners; nameless, since
    any name may be a listener's.
    """

    log = Logger()

    def __init__(
        self,
        registry: CollectorRegistry,
        reactor: IReactorCore,
        where: tuple[str, int] | None,
        alerts: Alerts | None = None,
        shortage: DescriptorShortage | None = None,
    ) -> None:
        self.where = where
        self._reactor = reactor
        self._alerts = alerts if alerts is not None else Alerts(self.log)
        self._shortage = shortage
        self.factory = CappedFactory(MetricsSite(MetricsPage(registry, reactor), reactor), reactor)
        self.port: IListeningPort | None = None

    @property
    def bound(self) -> tuple[str, int] | None:
        """The address and port it listens on now (the port it got, for port 0), or C{None}."""
        if self.port is None:
            return None
        host = self.port.getHost()
        return host.host, host.port

    def privilegedStartService(self) -> None:
        """Listen where the configuration says; @raise BindError: if it cannot."""
        super().privilegedStartService()
        if self.where is not None and self.port is None:
            self.port = self._listen(self.where)

    def _listen(self, where: tuple[str, int]) -> IListeningPort:
        address, port = where
        try:
            sock = bind_stream(address, port)
        except BindError as e:
            raise BindError(f"metrics: {e}") from e.__cause__
        try:
            # Twisted listens on a duplicate of the descriptor.
            listening = adopt_paced_port(self._reactor, sock.fileno(), sock.family, self.factory)
        except OSError as e:  # EMFILE, duplicating it
            raise BindError(f"metrics: cannot listen on {url(address, port)}: {e.strerror or e}") from e
        finally:
            sock.close()
        if self._shortage is not None:
            self._shortage.install(listening, _Owner())
        host = listening.getHost()
        self.log.info("metrics: serving Prometheus metrics at {url}", url=url(host.host, host.port))
        return listening

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self._close()

    def _close(self) -> defer.Deferred:
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        # Open scrapes end too: a half-served page is no use, and stopping must not wait on them.
        for protocol in list(self.factory.protocols):
            protocol.transport.abortConnection()
        return defer.maybeDeferred(port.stopListening)

    @defer.inlineCallbacks
    def move(self, where: tuple[str, int] | None):
        """
        Serve at C{where} (C{None}: nowhere) from now on. If the new port
        cannot be had, the old one serves on, and an alert says why; unless
        the old one was in the way (the same port on an overlapping
        address), which then closes first.
        """
        if where == self.where and (where is None) == (self.port is None):
            self._alerts.clear("metrics")  # where it is is where it is wanted again
            return
        if where is None:
            old = self.bound
            yield self._close()
            self.where = None
            self._alerts.clear("metrics")
            if old is not None:
                self.log.info("metrics: no longer served at {url}", url=url(*old))
            return
        try:
            new = self._listen(where)
        except BindError as e:
            in_the_way = e.address_in_use and self.bound is not None and self.bound[1] == where[1]
            if not in_the_way:
                kept = f"still served at {url(*self.bound)}" if self.port is not None else "not served"
                self._alerts.raise_(
                    "metrics", None, f"metrics not moved to {url(*where)}", log=f"reload: {e}; metrics {kept}"
                )
                return
            yield self._close()
            try:
                new = self._listen(where)
            except BindError as e:
                self.where = None
                self._alerts.raise_(
                    "metrics",
                    None,
                    f"metrics not served at {url(*where)}",
                    log=f"reload: {e}; metrics not served",
                )
                return
        else:
            yield self._close()
        self.port, self.where = new, where
        self._alerts.clear("metrics")
