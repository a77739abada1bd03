"""Connection bursts against a slow-accepting upstream, for tests/burst.rs.

  burst.py ws-server | http-server      serve on a free loopback port, print the port, run
                                        until stdin closes; the accept backlog is 100 and
                                        each new connection costs about 1 ms of blocking work
  burst.py ws-client HOST:PORT N        N concurrent WebSocket sessions, one echo each
  burst.py http-client HOST:PORT N      N concurrent plain GET requests
Clients print one JSON line: {"ok": n, "errors": {"<error>": count}}.
"""

import asyncio
import collections
import json
import socket
import sys
import os
import threading
import time

BACKLOG = 100
WORK_S = 0.001


class SlowAccept(socket.socket):
    """A listening socket whose accept() costs the upstream's per-connection work, done in
    its one accepting thread: past about 1,000 new connections per second the kernel's
    accept queue (BACKLOG) fills and further SYNs are dropped, as with a busy server."""

    def accept(self):
        conn = super().accept()
        time.sleep(WORK_S)
        return conn


def listener():
    s = SlowAccept(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(BACKLOG)
    print(s.getsockname()[1], flush=True)
    return s


def until_stdin_closes(stop):
    sys.stdin.read()
    stop()


def ws_server():
    from websockets.sync.server import serve

    def echo(ws):
        for msg in ws:
            ws.send(msg)

    with serve(echo, sock=listener()) as server:
        threading.Thread(target=until_stdin_closes, args=(server.shutdown,), daemon=True).start()
        server.serve_forever()


def http_server():
    def handle(conn):
        with conn:
            f = conn.makefile("rb")
            while True:
                line = f.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    sock = listener()
    threading.Thread(target=until_stdin_closes, args=(lambda: os._exit(0),), daemon=True).start()
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def report(results):
    errors = collections.Counter(r for r in results if r is not True)
    print(json.dumps({"ok": sum(1 for r in results if r is True), "errors": errors}))


async def ws_client(addr, n):
    from websockets.asyncio.client import connect

    start = asyncio.Event()

    async def one(i):
        await start.wait()
        try:
            async with connect(f"ws://{addr}/ws", open_timeout=20) as ws:
                await ws.send(f"hello {i}")
                got = await asyncio.wait_for(ws.recv(), 20)
                return True if got == f"hello {i}" else f"wrong echo {got!r}"
        except Exception as e:  # reported, not raised: the test counts them
            return f"{type(e).__name__}: {e}"

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)
    start.set()
    report(await asyncio.gather(*tasks))


async def http_client(addr, n):
    host, port = addr.rsplit(":", 1)
    start = asyncio.Event()

    async def one(i):
        await start.wait()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 20)
            w.write(f"GET /p/{i} HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n".encode())
            await w.drain()
            data = await asyncio.wait_for(r.read(), 20)
            w.close()
            status = data.split(b"\r\n", 1)[0]
            return True if status.startswith(b"HTTP/1.1 200") else status.decode(errors="replace")
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)
    start.set()
    report(await asyncio.gather(*tasks))


def main():
    cmd = sys.argv[1]
    if cmd == "ws-server":
        ws_server()
    elif cmd == "http-server":
        http_server()
    elif cmd == "ws-client":
        asyncio.run(ws_client(sys.argv[2], int(sys.argv[3])))
    elif cmd == "http-client":
        asyncio.run(http_client(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
