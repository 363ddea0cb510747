//! The policy as the Leap0 API and SDKs send it. These types only carry JSON; they are checked and
//! turned into a [`Policy`](crate::Policy) by [`NetworkPolicySpec::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::skip_serializing_none;

use crate::budget::BudgetsSpec;
use crate::error::{FieldError, ValidationErrors};
use crate::hold::OnUnknown;
use crate::http_rules::HttpRuleSpec;
use crate::placeholder::PlaceholderSpec;

/// What a sandbox may reach when no rule says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Mode {
    /// Everything public is allowed (the default when no policy is given).
    #[serde(rename = "allow-all")]
    AllowAll,
    /// Nothing leaves the sandbox.
    #[serde(rename = "deny-all")]
    DenyAll,
    /// Only `allow_domains`, `allow_cidrs` and transform domains.
    #[serde(rename = "custom")]
    Custom,
}

impl Mode {
    /// The wire spelling: `allow-all`, `deny-all` or `custom`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::AllowAll => "allow-all",
            Mode::DenyAll => "deny-all",
            Mode::Custom => "custom",
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Mode, String> {
        let all = [Mode::AllowAll, Mode::DenyAll, Mode::Custom];
        crate::validate::parse_word("mode", &s, &all, Mode::as_str)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::try_from(s.to_owned())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `network_policy` exactly as sent. `null` list fields are treated as absent.
// `remote = "Self"`: the derived impls become inherent functions, which the trait impls below
// wrap (see `ObjectOnly`).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkPolicySpec {
    /// The mode.
    pub mode: Mode,
    /// Exact names (`api.example.com`) or wildcards (`*.example.com`).
    pub allow_domains: Option<Vec<String>>,
    /// IPv4 or IPv6 networks (`10.0.0.0/24`) or single addresses.
    pub allow_cidrs: Option<Vec<String>>,
    /// Header rewriting for intercepted domains.
    pub transforms: Option<Vec<TransformSpec>>,
    /// Beyond Leap0: bytes the sandbox may send and receive per window, in all and per domain.
    pub budgets: Option<BudgetsSpec>,
    /// Beyond Leap0: audit mode (custom only). Would-be denials are recorded as `would-deny`
    /// events and the traffic proceeds. Sent back only when on, so Leap0 clients see nothing new.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "null_is_false"
    )]
    pub audit: bool,
    /// Beyond Leap0 (custom mode): `hold` puts unlisted names in the approval queue.
    pub on_unknown: Option<OnUnknown>,
    /// Beyond Leap0 (custom mode): exact names refused without asking ("deny always").
    pub deny_domains: Option<Vec<String>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `"audit": null` reads as absent, like the lists.
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Option::<bool>::deserialize(d).map(Option::unwrap_or_default)
}

impl Default for NetworkPolicySpec {
    /// An omitted policy: `allow-all`.
    fn default() -> Self {
        NetworkPolicySpec {
            mode: Mode::AllowAll,
            allow_domains: None,
            allow_cidrs: None,
            transforms: None,
            budgets: None,
            audit: false,
            on_unknown: None,
            deny_domains: None,
        }
    }
}

/// One transform as sent. `Debug` hides the header values (they are secrets).
#[skip_serializing_none]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransformSpec {
    /// Exact name or wildcard the transform applies to.
    pub domain: String,
    /// Headers set on every request (replacing any the client sent). Values are secrets:
    /// write-only, answered as `[REDACTED]`.
    pub inject_headers: Option<BTreeMap<String, String>>,
    /// Headers removed from every request.
    pub strip_headers: Option<Vec<String>>,
    /// Beyond Leap0: which requests may go upstream, by method and path (first match wins).
    pub http_rules: Option<Vec<HttpRuleSpec>>,
    /// Beyond Leap0: tokens the sandbox may hold, replaced by the secret in the named headers.
    pub placeholders: Option<Vec<PlaceholderSpec>>,
}

impl fmt::Debug for TransformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inject: Option<Vec<&String>> = self.inject_headers.as_ref().map(|m| m.keys().collect());
        f.debug_struct("TransformSpec")
            .field("domain", &self.domain)
            .field("inject_headers", &inject.map(|names| (names, "[REDACTED]")))
            .field("strip_headers", &self.strip_headers)
            .field("http_rules", &self.http_rules)
            .field("placeholders", &self.placeholders)
            .finish()
    }
}

/// The JSON path prefix of every reported field.
pub(crate) const ROOT: &str = "network_policy";

impl NetworkPolicySpec {
    /// Parses the JSON of a `network_policy` object. Errors carry the JSON path of the field that
    /// could not be read (`network_policy.transforms[0].domain`) and never echo header values.
    pub fn from_json(bytes: &[u8]) -> Result<NetworkPolicySpec, ValidationErrors> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, NetworkPolicySpec>(de) {
            Ok(spec) => Ok(spec),
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." || path.is_empty() {
                    ROOT.to_owned()
                } else if path.starts_with('[') {
                    format!("{ROOT}{path}")
                } else {
                    format!("{ROOT}.{path}")
                };
                Err(ValidationErrors(vec![FieldError {
                    field,
                    message: describe_json_error(e.inner()),
                }]))
            }
        }
    }

    /// Serialises to the JSON the API sends (absent lists omitted).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, maps and enums cannot fail; fall back to the mode alone.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"mode\":\"{}\"}}", self.mode))
    }
}

/// serde_json messages include the offending value for some errors ("invalid type: string
/// \"sk-...\""); a header value may be a secret, so only the category and position survive.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => format!("could not read the JSON ({at})"),
        Category::Eof => format!("the JSON ends too early ({at})"),
        Category::Syntax => format!("is not valid JSON ({at})"),
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("unknown field")
                || msg.starts_with("missing field")
                || msg.starts_with("unknown variant")
                || msg.starts_with("duplicate field")
                || msg.starts_with("unknown mode")
                || msg.starts_with("unknown on_unknown")
            {
                // These messages name only field or variant names, never values of headers.
                let head = msg.split(" at line ").next().unwrap_or(&msg);
                head.replace("unknown variant", "unknown mode")
            } else if msg.starts_with("invalid type") {
                // The value shown before ", expected" may be anything the client sent; the
                // expectation after the last one is ours.
                let expected = msg
                    .rsplit_once(", expected ")
                    .and_then(|(_, s)| s.split(" at line ").next());
                match expected {
                    Some(exp) => {
                        format!("has the wrong type: expected {exp}")
                    }
                    None => "has the wrong type".to_owned(),
                }
            } else if msg.starts_with("invalid value") {
                // "invalid value: integer `-1`, expected u64": the value is the client's, the
                // expectation ours.
                match msg
                    .rsplit_once(", expected ")
                    .map(|(_, s)| s.split(" at line ").next())
                {
                    Some(Some("u64")) => "must be a whole number, 0 or more".to_owned(),
                    Some(Some(exp)) => format!("has an invalid value: expected {exp}"),
                    _ => "has an invalid value".to_owned(),
                }
            } else {
                format!("is not valid here ({at})")
            }
        }
    }
}

// Derived struct deserialisers also accept a JSON array of field values
// (`["custom", ["a.com"]]`); the API takes objects only, so the public types' trait impls
// take a map and hand it to the derived (inherent, `remote = "Self"`) impls.

/// The derived field handling of a `remote = "Self"` type, reached through a map only.
trait FromMap<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: FromMap<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

impl<'de> FromMap<'de> for NetworkPolicySpec {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        NetworkPolicySpec::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> FromMap<'de> for TransformSpec {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        TransformSpec::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for NetworkPolicySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(PhantomData))
    }
}

impl<'de> Deserialize<'de> for TransformSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOnly(PhantomData))
    }
}

impl Serialize for NetworkPolicySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        NetworkPolicySpec::serialize(self, s)
    }
}

impl Serialize for TransformSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TransformSpec::serialize(self, s)
    }
}
