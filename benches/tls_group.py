#!/usr/bin/env python3
"""Which key-exchange group a TLS 1.3 server picks for a client that offers X25519MLKEM768.

    benches/tls_group.py HOST PORT

Sends one ClientHello shaped like a post-quantum hybrid client's (supported groups
X25519MLKEM768, X25519, P-256; key shares for X25519MLKEM768 and X25519) and prints the group
of the server's key share, e.g. "X25519MLKEM768" or "X25519", or "HRR:<group>" when the server
asks for another share. The ML-KEM-768 encapsulation key is all-zero coefficients (a valid
key) with a random seed: the server encapsulates to it and answers, which is all this needs.
No certificate is checked and nothing past the ServerHello is read.
"""
import os, socket, struct, sys

GROUPS = {0x11EC: "X25519MLKEM768", 0x001D: "X25519", 0x0017: "P-256", 0x0018: "P-384"}
HRR = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def ext(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(host):
    mlkem = bytes(1152) + os.urandom(32)       # ML-KEM-768 encapsulation key
    shares = (struct.pack("!HH", 0x11EC, len(mlkem) + 32) + mlkem + os.urandom(32)
              + struct.pack("!HH", 0x001D, 32) + os.urandom(32))
    groups = struct.pack("!HHH", 0x11EC, 0x001D, 0x0017)
    sigs = struct.pack("!HHHH", 0x0403, 0x0804, 0x0805, 0x0401)
    name = host.encode()
    exts = (ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
            + ext(0x002B, b"\x02\x03\x04")
            + ext(0x000A, struct.pack("!H", len(groups)) + groups)
            + ext(0x000D, struct.pack("!H", len(sigs)) + sigs)
            + ext(0x0033, struct.pack("!H", len(shares)) + shares))
    suites = struct.pack("!HHH", 0x1301, 0x1302, 0x1303)
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32)
            + struct.pack("!H", len(suites)) + suites + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit("the server closed the connection before its ServerHello")
        buf += chunk
    return buf


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tls_group.py HOST PORT")
    host, port = sys.argv[1], int(sys.argv[2])
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(client_hello("bench.test"))
        kind, _, length = struct.unpack("!BHH", read_exact(s, 5))
        rec = read_exact(s, length)
        if kind == 0x15:
            sys.exit(f"alert {rec[1]} instead of a ServerHello")
        if kind != 0x16 or rec[0] != 0x02:
            sys.exit(f"unexpected record {kind} / handshake {rec[0]}")
        p = 4 + 2
        hrr = rec[p:p + 32] == HRR
        p += 32
        p += 1 + rec[p]          # session id
        p += 2 + 1               # cipher suite, compression
        end = p + 2 + struct.unpack("!H", rec[p:p + 2])[0]
        p += 2
        while p < end:
            kind, n = struct.unpack("!HH", rec[p:p + 4])
            if kind == 0x0033:
                g = struct.unpack("!H", rec[p + 4:p + 6])[0]
                name = GROUPS.get(g, hex(g))
                print(f"HRR:{name}" if hrr else name)
                return
            p += 4 + n
        sys.exit("no key_share in the ServerHello")


main()
