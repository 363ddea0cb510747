#!/usr/bin/env python3
"""Derive the hand-made ClientHellos from captured ones (run from this directory).

split-records.bin: curl.bin's handshake message re-fragmented over 3 TLS records, cut inside the
    handshake header and inside the server_name extension (threats.md case 18).
ech.bin: curl.bin with an encrypted_client_hello (0xfe0d) outer extension appended: type outer,
    HPKE suite, config id, a 32-byte enc and a 200-byte payload of zeros (shape, not crypto).
"""
data = open("curl.bin", "rb").read()
assert data[0] == 0x16
msg = data[5:5 + int.from_bytes(data[3:5], "big")]


def record(frag):
    return bytes([0x16, 0x03, 0x01]) + len(frag).to_bytes(2, "big") + frag


sni_at = msg.find(b"alpha.test")
cuts = [0, 2, sni_at + 4, len(msg)]
open("split-records.bin", "wb").write(b"".join(record(msg[a:b]) for a, b in zip(cuts, cuts[1:])))

# Walk to the extensions block: header 4, version 2, random 32, session id, suites, compression.
at = 4 + 2 + 32
at += 1 + msg[at]
at += 2 + int.from_bytes(msg[at:at + 2], "big")
at += 1 + msg[at]
ext_len = int.from_bytes(msg[at:at + 2], "big")
ech = bytes([0]) + b"\x00\x01\x00\x01" + bytes([0x42]) + (32).to_bytes(2, "big") + bytes(32)
ech += (200).to_bytes(2, "big") + bytes(200)
ext = (0xfe0d).to_bytes(2, "big") + len(ech).to_bytes(2, "big") + ech
body = msg[4:at] + (ext_len + len(ext)).to_bytes(2, "big") + msg[at + 2:] + ext
new = bytes([1]) + len(body).to_bytes(3, "big") + body
open("ech.bin", "wb").write(record(new))
