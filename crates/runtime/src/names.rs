//! Template names and their directory names.

use crate::error::{Result, RuntimeError};

/// The host's own root, read-only below an overlay: fast, for tests.
pub const HOST_TEMPLATE: &str = "system/host";
/// The default template: a Debian bookworm root built with debootstrap.
pub const DEBIAN_TEMPLATE: &str = "system/debian:bookworm";

/// Checks a template name: 1–128 of `[A-Za-z0-9._:/-]`, no empty or dot-only segment.
pub(crate) fn validate_template_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b))
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg.bytes().any(|b| b != b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "template name {name:?} must be 1-128 of [A-Za-z0-9._:/-] without empty segments"
        )))
    }
}

/// A directory name for a template: unambiguous, and free of `/`, `:` and `,` (which overlayfs
/// option parsing would split on). Bytes outside `[A-Za-z0-9.-]` become `_xx`.
pub(crate) fn dir_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("_{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
