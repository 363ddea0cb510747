//! The Leap0 error shape: `{"message": "...", "errors": [{"field": "...", "error": "..."}]}`
//! with the status the SDKs map to their exception classes (400, 401, 404, 409, 429, 500).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::plane::PlaneError;

/// One problem with one request field. `field` is a JSON path (`network_policy.allow_domains[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub error: String,
}

/// The error body every non-2xx answer carries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    pub errors: Vec<FieldProblem>,
}

/// What went wrong, as the API reports it. Causes on our side are logged with their whole
/// chain, never sent: the client reads which side failed, not how.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Validation(Vec<FieldProblem>),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Quota(String),
    /// A fault of ours (500).
    #[error("internal error: {0}")]
    Internal(#[source] PlaneError),
    /// Not now (503): a template not ready, no address left, a full disk, a store that cannot
    /// write. `message` says what to do; `cause`, when there is one, goes to the log.
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<PlaneError>,
    },
}

impl ApiError {
    /// A 400 naming one field.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldProblem {
            field: field.into(),
            error: error.into(),
        }])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (message, errors) = match self {
            ApiError::Validation(errors) => {
                let message = match errors.as_slice() {
                    [one] => format!("invalid request: {}: {}", one.field, one.error),
                    _ => "invalid request".to_owned(),
                };
                (message, errors.clone())
            }
            other => (other.to_string(), Vec::new()),
        };
        ErrorBody { message, errors }
    }
}

impl From<palisade_policy::ValidationErrors> for ApiError {
    fn from(e: palisade_policy::ValidationErrors) -> Self {
        ApiError::Validation(
            e.0.into_iter()
                .map(|f| FieldProblem {
                    field: f.field,
                    error: f.message,
                })
                .collect(),
        )
    }
}

/// The one place a control-plane error becomes an HTTP status and a message.
impl From<PlaneError> for ApiError {
    fn from(e: PlaneError) -> Self {
        match e {
            PlaneError::Invalid { field, message } => ApiError::field(field, message),
            PlaneError::Policy(errors) => errors.into(),
            PlaneError::NotFound(what) => ApiError::NotFound(what),
            PlaneError::Conflict(m) => ApiError::Conflict(m),
            PlaneError::Quota(m) => ApiError::Quota(m),
            PlaneError::TemplateNotReady(message) => ApiError::Unavailable {
                message,
                cause: None,
            },
            PlaneError::NoAddresses => ApiError::Unavailable {
                message: e.to_string(),
                cause: None,
            },
            PlaneError::DiskFull(_) => ApiError::Unavailable {
                message: "the host's data disk is full: nothing was written (an archive begun is \
                          removed); free space and try again"
                    .into(),
                cause: Some(e),
            },
            // Said plainly (503, retry later); the detail still goes to the log.
            PlaneError::Store(ref s) => match s.storage_fault() {
                Some(fault) => ApiError::Unavailable {
                    message: format!("{fault}; try again later"),
                    cause: Some(e),
                },
                None => ApiError::Internal(e),
            },
            other => ApiError::Internal(other),
        }
    }
}

impl From<palisade_store::StoreError> for ApiError {
    fn from(e: palisade_store::StoreError) -> Self {
        PlaneError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause.chain(), "internal error answered with 500");
            }
            ApiError::Unavailable {
                cause: Some(cause), ..
            } => {
                tracing::error!(error = %cause.chain(), "host fault answered with 503");
            }
            _ => {}
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_not_in_body() {
        let e = ApiError::from(PlaneError::Network(palisade_netns::NetnsError::Command {
            command: "nft -f /secret/path".into(),
            status: "exit status: 1".into(),
            stderr: "sqlite: disk I/O error at /secret/path".into(),
        }));
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("/secret/path"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // The client still learns which side failed.
        assert!(body.contains("network"), "{body}");
    }

    #[test]
    fn plane_causes_map_to_their_status() {
        let cases = [
            (PlaneError::NotFound("sandbox"), StatusCode::NOT_FOUND),
            (PlaneError::Conflict("x".into()), StatusCode::CONFLICT),
            (PlaneError::Quota("x".into()), StatusCode::TOO_MANY_REQUESTS),
            (PlaneError::invalid("uri", "bad"), StatusCode::BAD_REQUEST),
            (
                PlaneError::TemplateNotReady("building".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (PlaneError::NoAddresses, StatusCode::SERVICE_UNAVAILABLE),
            (
                PlaneError::Poisoned("pool"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status(), status);
        }
        let b = ApiError::from(PlaneError::invalid("uri", "unsupported")).body();
        assert_eq!(b.errors[0].field, "uri");
    }

    #[test]
    fn validation_message_names_the_field() {
        let b = ApiError::field("vcpu", "must be between 1 and 8").body();
        assert_eq!(b.errors[0].field, "vcpu");
        assert!(b.message.contains("vcpu"));
    }
}
