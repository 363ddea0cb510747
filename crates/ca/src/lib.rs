//! Per-sandbox certificate authority and on-demand leaf certificates for TLS interception, with a leaf cache.

#![forbid(unsafe_code)]
