//! Entry points for the cargo-fuzz targets in `fuzz/` (not a public API).

/// Feeds arbitrary bytes, as a sandbox's HTTP/1 stream on an intercepted connection, through the
/// same framing guard, per-request checks and rewriting the proxy uses, against an in-memory
/// upstream; panics if the secret would go anywhere but one `Authorization` header of a request
/// that named the transform domain, if a body the guard could not follow reached the upstream
/// complete, or if the guard's verdicts depend on how the stream was split.
pub fn intercept_http(data: &[u8]) {
    let _ = crate::proxy::intercept_harness_run(data);
}
