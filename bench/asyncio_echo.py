"""
An asyncio echo server to compare echod with, on 127.0.0.1 and a free port.

    python bench/asyncio_echo.py [--uvloop]

A plain C{asyncio.Protocol}: C{transport.write} in C{data_received}. It needs nothing more for a client
that half-closes: C{eof_received} returning a false value makes the transport close once its queued
echo is written. asyncio sets TCP_NODELAY on its connections, Twisted does not.
"""

import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve() -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    if "--uvloop" in sys.argv[1:]:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
