//! Secret header values.

use std::fmt;

use zeroize::Zeroize;

/// A header value that must never be shown: `Debug` and `Display` print `[REDACTED]`, and the
/// memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

/// What redacted values read as.
pub const REDACTED: &str = "[REDACTED]";

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The value itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}
