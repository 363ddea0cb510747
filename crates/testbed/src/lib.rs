//! A test world in network namespaces: a firewall host, an internet with upstream servers, and sandboxes running real clients.

#![forbid(unsafe_code)]
