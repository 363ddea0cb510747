//! Placeholders (beyond Leap0): a stand-in token the sandbox may hold in place of a secret, for
//! SDKs that refuse to start without an API key in their configuration. The firewall replaces
//! the token with the real value in the request headers the placeholder names, only on requests
//! to its transform's domain; anywhere else the token is just a string that opens nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::SecretValue;

/// Every placeholder starts with this, so it cannot be mistaken for ordinary text.
pub const PLACEHOLDER_PREFIX: &str = "pl-secret-";
/// Random characters a placeholder needs after the prefix.
const MIN_RANDOM: usize = 16;

/// One placeholder as sent: `{"placeholder": "pl-secret-…", "value": "sk-…", "headers":
/// ["Authorization"]}`. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlaceholderSpec {
    /// The token handed to the sandbox (in its environment, say).
    pub placeholder: String,
    /// The secret it stands for.
    pub value: String,
    /// The request headers in which it is replaced.
    pub headers: Vec<String>,
}

impl fmt::Debug for PlaceholderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaceholderSpec")
            .field("placeholder", &self.placeholder)
            .field("value", &crate::secret::REDACTED)
            .field("headers", &self.headers)
            .finish()
    }
}

/// A checked placeholder: header names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub(crate) token: String,
    pub(crate) value: SecretValue,
    pub(crate) headers: Vec<String>,
}

impl Placeholder {
    /// The token the sandbox holds.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The secret it is replaced with.
    pub fn value(&self) -> &SecretValue {
        &self.value
    }

    /// Lower-case names of the headers it is replaced in.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    pub(crate) fn to_spec(&self, redact: bool) -> PlaceholderSpec {
        PlaceholderSpec {
            placeholder: self.token.clone(),
            value: if redact {
                crate::secret::REDACTED.to_owned()
            } else {
                self.value.expose().to_owned()
            },
            headers: self.headers.clone(),
        }
    }
}

/// Checks a placeholder token (completes a sentence about the field).
pub(crate) fn check_token(token: &str) -> Result<(), String> {
    let Some(random) = token.strip_prefix(PLACEHOLDER_PREFIX) else {
        return Err(format!("must start with {PLACEHOLDER_PREFIX:?}"));
    };
    if random.len() < MIN_RANDOM || token.len() > 128 {
        return Err(format!(
            "needs {MIN_RANDOM} to {} characters after {PLACEHOLDER_PREFIX:?} (for example from `openssl rand -hex 16`)",
            128 - PLACEHOLDER_PREFIX.len()
        ));
    }
    if !random
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may only contain letters, digits, '-' and '_'".to_owned());
    }
    Ok(())
}
