"""A trivial HTTP/1.1 server (asyncio, keep-alive, fixed 202 answer) to measure the client's ceiling.

``python -m bench.trivial_server PORT`` serves on 127.0.0.1:PORT until SIGTERM. It does no work per
request beyond framing, so the request rate wrk reaches against it bounds what wrk itself can send.
"""

from __future__ import annotations

import asyncio
import sys

_BODY = b'{"accepted":0}'
_ANSWER = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(_ANSWER)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1])
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop is slower but still far above any Django server
        asyncio.run(_serve(port))
    else:
        uvloop.run(_serve(port))


if __name__ == "__main__":
    main()
