//! Network namespaces, veth pairs, addresses and the per-sandbox nftables chain: rendering is pure, applying is a thin shell.

#![forbid(unsafe_code)]
