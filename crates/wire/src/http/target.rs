//! The four forms of a request target (RFC 9112 §3.2) and which method may use which.

use crate::SniffError;

/// The form of a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`: the Host header names the destination.
    Origin,
    /// `http://authority/path`: the target's authority overrides Host (RFC 9112 §3.2.2), so the
    /// proxy must decide on it, not on Host.
    Absolute,
    /// `host:port`, only with CONNECT.
    Authority,
    /// `*`, only with OPTIONS.
    Asterisk,
}

/// Classifies `target` for `method`, refusing combinations RFC 9112 does not allow and
/// userinfo in an absolute-form target (RFC 9110 §4.2.4: `allowed.test@evil.test` tricks).
pub(super) fn classify(method: &str, target: &str) -> Result<TargetForm, SniffError> {
    if method == "CONNECT" {
        return if is_authority_form(target) {
            Ok(TargetForm::Authority)
        } else {
            Err(SniffError::Malformed("CONNECT target is not host:port"))
        };
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(TargetForm::Asterisk)
        } else {
            Err(SniffError::Malformed("asterisk target outside OPTIONS"))
        };
    }
    if target.starts_with('/') {
        return Ok(TargetForm::Origin);
    }
    let Some(authority) = absolute_authority(target) else {
        return Err(SniffError::Malformed(
            "request target is not origin or absolute form",
        ));
    };
    if authority.contains('@') {
        return Err(SniffError::Malformed("userinfo in the request target"));
    }
    Ok(TargetForm::Absolute)
}

/// The authority of an absolute-form target: what lies between `scheme://` and the path.
pub(super) fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let valid_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `host:port` with a decimal port and no path, query, fragment or userinfo.
fn is_authority_form(target: &str) -> bool {
    let Some((host, port)) = target.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
}
