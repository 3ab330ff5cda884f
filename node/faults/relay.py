"""A TCP relay that holds every chunk it reads for a set delay before passing it on, in
order: delay between hosts where the kernel offers no netem. Runs on the sending host;
its own connections carry a firewall mark, so that the rule that steers the host's
traffic into the relay lets them through.

    python -m crmledger.node.faults.relay --listen ADDR:PORT --to ADDR:PORT --delay-ms 200

It prints "ready" once it listens, and stops on SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket

MARK = 0x42   # the firewall mark of the relay's own connections


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + delay, data))
        finally:
            queue.put_nowait((0.0, b""))

    async def write() -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    await asyncio.gather(read(), write(), return_exceptions=True)


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def serve(listen: tuple[str, int], to: tuple[str, int], delay: float) -> None:
    async def handle(r_in: asyncio.StreamReader, w_in: asyncio.StreamWriter) -> None:
        try:
            r_out, w_out = await _connect(*to)
        except OSError:
            w_in.close()
            return
        await asyncio.gather(_pipe(r_in, w_out, delay), _pipe(r_out, w_in, delay))

    server = await asyncio.start_server(handle, *listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def _addr(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    return host, int(port)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m crmledger.node.faults.relay")
    ap.add_argument("--listen", required=True, type=_addr)
    ap.add_argument("--to", required=True, type=_addr)
    ap.add_argument("--delay-ms", required=True, type=float)
    a = ap.parse_args()
    asyncio.run(serve(a.listen, a.to, a.delay_ms / 1000))


if __name__ == "__main__":
    main()
