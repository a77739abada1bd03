#!/usr/bin/env python3
"""Opens N client connections to a server, holds them, and prints what they cost it.

    conns.py PID PORT N MODE [--tls]

MODE is what each connection does before it is held:
  idle     one GET / answered in full, then nothing (an idle keep-alive connection)
  partial  the first line and one header of a request, never the empty line that ends it
  fresh    nothing at all after connecting (and the TLS handshake with --tls)

PID is the process whose resident memory (VmRSS) is read before and after; the printed
figure is (after - before) / N in kB (the kilobytes of /proc, 1024 bytes). Connections are
opened by a bounded number of concurrent openers so the listen queue never overflows. The
server must keep idle and partial connections open for longer than the run takes.
HOLD=SECONDS keeps the connections open that much longer after the figure is printed (to
look at the server meanwhile, e.g. /proc/PID/smaps).
"""

import asyncio
import os
import ssl
import sys
import time

OPENERS = 200
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: conns\r\n\r\n"
PARTIAL = b"GET / HTTP/1.1\r\nHost: bench.test\r\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def read_response(reader):
    """Reads one response with a Content-Length body (what both servers send here)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if not head.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(f"unexpected response: {head[:60]!r}")
    await reader.readexactly(length)


async def open_one(port, mode, ctx):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="bench.test" if ctx else None
    )
    if mode == "idle":
        writer.write(REQUEST)
        await writer.drain()
        await read_response(reader)
    elif mode == "partial":
        writer.write(PARTIAL)
        await writer.drain()
    return reader, writer


async def main():
    pid, port, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    tls = "--tls" in sys.argv[5:]
    if mode not in ("idle", "partial", "fresh"):
        sys.exit(f"unknown mode {mode!r} (idle | partial | fresh)")
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])

    # Warm-up: a few requests on short connections, so one-time allocations (the upstream
    # pool, lazily built tables) are in `before`.
    for _ in range(3):
        warm = await asyncio.gather(*(open_one(port, "idle", ctx) for _ in range(OPENERS // 2)))
        for _, w in warm:
            w.close()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    before = rss_kb(pid)

    held = []
    todo = iter(range(n))

    async def opener():
        for _ in todo:
            held.append(await open_one(port, mode, ctx))

    t0 = time.monotonic()
    await asyncio.gather(*(opener() for _ in range(min(OPENERS, n))))
    opened = time.monotonic() - t0
    # Let the server finish its side (the last reads, freed request state), then read the
    # figure once it no longer moves.
    after, last = rss_kb(pid), -1
    for _ in range(20):
        await asyncio.sleep(0.5)
        last, after = after, rss_kb(pid)
        if abs(after - last) < 64:
            break
    # Every connection must still be open: a server that closed some would look cheap.
    alive = sum(1 for r, _ in held if not r.at_eof())
    if alive != n:
        sys.exit(f"only {alive} of {n} connections are still open")
    per = (after - before) / n
    print(f"{mode}{'-tls' if tls else ''}: {n} connections, rss {before} -> {after} kB, "
          f"{per:.1f} kB per connection (opened in {opened:.1f}s)")
    await asyncio.sleep(float(os.environ.get("HOLD", "0")))
    for _, w in held:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
