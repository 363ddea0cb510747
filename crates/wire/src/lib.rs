//! Protocol sniffing: the TLS ClientHello (SNI, ALPN, ECH) and HTTP/1 request heads, parsed from peeked bytes. Pure code.

#![forbid(unsafe_code)]
