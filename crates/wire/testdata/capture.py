#!/usr/bin/env python3
"""Capture the first bytes a real TLS client sends (its ClientHello) on loopback.

Usage: capture.py OUT.bin -- CLIENT ARGS...   ({port} in the client args is replaced)

Listens on 127.0.0.1 on a random port, runs the client, accepts one connection and
reads TLS records until the whole handshake message (the ClientHello) is there, then
writes exactly those record bytes to OUT.bin and closes the connection (the client
then fails, which is fine). Only loopback is ever used.
"""
import socket
import subprocess
import sys


def read_exact(conn, n, buf):
    while len(buf) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise SystemExit(f"client closed after {len(buf)} bytes")
        buf += chunk
    return buf


def main():
    out = sys.argv[1]
    assert sys.argv[2] == "--"
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    cmd = [a.replace("{port}", str(port)) for a in sys.argv[3:]]
    client = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        conn, _ = srv.accept()
        conn.settimeout(10)
        buf = b""
        pos = 0
        hs = b""
        # Records until the handshake message (4-byte header + length) is complete.
        while True:
            buf = read_exact(conn, pos + 5, buf)
            assert buf[pos] == 0x16, "not a handshake record"
            rlen = int.from_bytes(buf[pos + 3:pos + 5], "big")
            buf = read_exact(conn, pos + 5 + rlen, buf)
            hs += buf[pos + 5:pos + 5 + rlen]
            pos += 5 + rlen
            if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
                break
        with open(out, "wb") as f:
            f.write(buf[:pos])
        print(f"{out}: {pos} bytes")
        conn.close()
    finally:
        client.kill()
        client.wait()


if __name__ == "__main__":
    main()
