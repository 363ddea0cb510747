//! Request body and query parsing that answers in the Leap0 error shape, naming the field
//! that could not be read, and never echoing a value (a value may be a secret).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::control::{CreateSandbox, CreateSnapshot, CreateTemplate, RestoreSnapshot};
use crate::error::ApiError;
use crate::model::{
    CreateSandboxRequest, CreateSnapshotRequest, CreateTemplateRequest, RestoreSnapshotRequest,
};

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// A JSON body parsed with field paths in errors. An empty body reads as `{}` (the SDKs send
/// no body for some POSTs).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::field("body", "could not be read, or is larger than 1 MiB"))?;
        parse_json(if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        })
        .map(JsonBody)
    }
}

/// Commands a handler takes straight from its request's body: the JSON is read as the wire
/// type, then checked by that type's `TryFrom`, each step answering 400 with the field that
/// failed. The handler is left with a typed call on the control plane.
macro_rules! command_from_json {
    ($($command:ty: $wire:ty),+ $(,)?) => {$(
        impl<S: Send + Sync> FromRequest<S> for $command {
            type Rejection = ApiError;

            async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
                let JsonBody(wire) = JsonBody::<$wire>::from_request(req, state).await?;
                wire.try_into()
            }
        }
    )+};
}

command_from_json!(
    CreateSandbox: CreateSandboxRequest,
    CreateSnapshot: CreateSnapshotRequest,
    RestoreSnapshot: RestoreSnapshotRequest,
    CreateTemplate: CreateTemplateRequest,
);

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at_root = path == "." || path == "?" || path.is_empty();
        // serde reports a missing field at the object that lacks it: name the field itself.
        let missing = e
            .inner()
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next().map(str::to_owned));
        let field = match (missing, at_root) {
            (Some(name), true) => name,
            (Some(name), false) => format!("{path}.{name}"),
            (None, true) => "body".to_owned(),
            (None, false) => path,
        };
        ApiError::field(field, describe(e.inner()))
    })
}

/// serde_json's messages quote offending values in some cases; keep only what is safe.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io | Category::Syntax => format!(
            "is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ),
        Category::Eof => "the JSON ends too early".to_owned(),
        Category::Data => {
            let msg = e.to_string();
            let head = msg.split(" at line ").next().unwrap_or(&msg);
            if head.starts_with("unknown field") || head.starts_with("missing field") {
                head.to_owned()
            } else if let Some(expected) = head
                .strip_prefix("invalid type: ")
                .and_then(|s| s.split("expected ").nth(1))
            {
                format!("has the wrong type: expected {expected}")
            } else if head.starts_with("invalid value") || head.starts_with("invalid length") {
                match head.split("expected ").nth(1) {
                    Some(expected) => format!("is not valid: expected {expected}"),
                    None => "is not valid".to_owned(),
                }
            } else {
                "is not valid".to_owned()
            }
        }
    }
}

/// The query string as plain name/value pairs, extracted once per request; each handler
/// converts the parameters it knows and names the parameter in its error. A repeated name
/// reads as its last value; an unreadable query string reads as empty.
#[derive(Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Params::parse(parts.uri.query()))
    }
}

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Params(
            raw.and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        (self.0.iter().rev())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`.
    pub(crate) fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::field(
                    name,
                    format!("must be an integer between {min} and {max}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: Option<i64>,
        env: Option<BTreeMap<String, String>>,
    }

    #[test]
    fn errors_name_the_field_without_values() {
        let e = parse_json::<T>(br#"{"a": "sk-secret"}"#)
            .unwrap_err()
            .body();
        assert_eq!(e.errors[0].field, "a");
        assert!(!serde_json::to_string(&e).unwrap().contains("sk-secret"));
        let e = parse_json::<T>(br#"{"env": {"K": 5}}"#).unwrap_err().body();
        assert_eq!(e.errors[0].field, "env.K");
        let e = parse_json::<T>(br#"{"zzz": 1}"#).unwrap_err().body();
        assert!(
            e.errors[0].error.starts_with("unknown field `zzz`"),
            "{e:?}"
        );
        let e = parse_json::<T>(b"{").unwrap_err().body();
        assert_eq!(e.errors[0].field, "body");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Needs {
        command: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        domain: String,
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parse_json::<Needs>(b"{}").unwrap_err().body();
        assert_eq!(e.errors[0].field, "command");
        let e = parse_json::<Needs>(br#"{"command":"x","inner":{}}"#)
            .unwrap_err()
            .body();
        assert_eq!(e.errors[0].field, "inner.domain");
    }

    #[test]
    fn query_params() {
        let q = Params::parse(Some("page=2&page-size=500&y=%20y&x=a&x=z"));
        assert_eq!(q.int("page", 1, 10).unwrap(), Some(2));
        assert!(q.int("page-size", 1, 100).is_err());
        assert_eq!(q.get("y"), Some(" y"));
        assert_eq!(q.get("x"), Some("z"), "the last of a repeated name");
        assert_eq!(q.int("missing", 1, 2).unwrap(), None);
        assert_eq!(Params::parse(Some("%zz=&&=")).get("page"), None);
    }
}
