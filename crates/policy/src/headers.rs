//! Header names and values allowed in transforms.

/// Headers the proxy owns: framing, hop-by-hop and routing headers. Injecting or stripping them
/// would let a policy break request framing or the binding of a request to its host.
const PROXY_OWNED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "http2-settings",
];

/// Why a header name was refused (completes a sentence starting with the quoted name).
pub(crate) fn check_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("is empty; a header name is required".to_owned());
    }
    if name.starts_with(':') {
        return Err("is an HTTP/2 pseudo-header, which the proxy sets itself".to_owned());
    }
    if let Some(bad) = name.chars().find(|c| !is_tchar(*c)) {
        return Err(format!(
            "is not a valid HTTP header name (it contains {bad:?})"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if PROXY_OWNED.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err("is managed by the proxy and cannot be injected or stripped".to_owned());
    }
    Ok(lower)
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks an injected value without ever echoing it (it is usually a secret).
pub(crate) fn check_value(value: &str, max_len: usize) -> Result<(), String> {
    if value.len() > max_len {
        return Err(format!(
            "value is {} bytes long; the limit is {max_len}",
            value.len()
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err(
            "value contains a line break (CR or LF), which would split the request".to_owned(),
        );
    }
    if value.contains('\0') {
        return Err("value contains a NUL byte".to_owned());
    }
    if value
        .chars()
        .any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    {
        return Err("value contains a control character".to_owned());
    }
    Ok(())
}
