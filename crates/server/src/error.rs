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
    /// A request the wire layer refused (400), each problem naming its field.
    #[error("invalid request")]
    Validation(Vec<FieldProblem>),
    #[error("missing or invalid API key")]
    Unauthorized,
    /// No route answers the path (404).
    #[error("route not found")]
    NoRoute,
    /// What the control plane answered, kept whole: [`Answer::of`] reads the status and the
    /// message off its variant, the one place a control-plane error becomes HTTP.
    #[error(transparent)]
    Plane(#[from] PlaneError),
}

/// How the API answers a control-plane error: the caller's doing, or the host's.
enum Answer {
    /// 400, each problem naming its field.
    Fields(Vec<FieldProblem>),
    /// 404, 409 or 429, with the plane's own message.
    Refused(StatusCode),
    /// Not now (503): a template not ready, no address left, a full disk, a store that cannot
    /// write. `message` says what to do; a `logged` cause goes to the log.
    Unavailable { message: String, logged: bool },
    /// A fault of ours (500): the client reads which side failed.
    Internal,
}

impl Answer {
    fn of(e: &PlaneError) -> Self {
        match e {
            PlaneError::Invalid { field, message } => Answer::Fields(vec![FieldProblem {
                field: (*field).to_owned(),
                error: message.clone(),
            }]),
            PlaneError::Policy(errors) => Answer::Fields(problems(errors)),
            PlaneError::NotFound(_) => Answer::Refused(StatusCode::NOT_FOUND),
            PlaneError::Conflict(_) => Answer::Refused(StatusCode::CONFLICT),
            PlaneError::Quota(_) => Answer::Refused(StatusCode::TOO_MANY_REQUESTS),
            PlaneError::TemplateNotReady(_) | PlaneError::NoAddresses => Answer::Unavailable {
                message: e.to_string(),
                logged: false,
            },
            PlaneError::DiskFull(_) => Answer::Unavailable {
                message: "the host's data disk is full: nothing was written (an archive begun \
                          is removed); free space and try again"
                    .into(),
                logged: true,
            },
            // Said plainly (503, retry later); the detail still goes to the log.
            PlaneError::Store(s) => match s.storage_fault() {
                Some(fault) => Answer::Unavailable {
                    message: format!("{fault}; try again later"),
                    logged: true,
                },
                None => Answer::Internal,
            },
            PlaneError::Runtime(_)
            | PlaneError::Network(_)
            | PlaneError::Ca(_)
            | PlaneError::CorruptPolicy(_)
            | PlaneError::Serialize(_)
            | PlaneError::Task(_)
            | PlaneError::SnapshotDir(_)
            | PlaneError::Poisoned(_) => Answer::Internal,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Answer::Fields(_) => StatusCode::BAD_REQUEST,
            Answer::Refused(status) => *status,
            Answer::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Answer::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn problems(e: &palisade_policy::ValidationErrors) -> Vec<FieldProblem> {
    e.0.iter()
        .map(|f| FieldProblem {
            field: f.field.clone(),
            error: f.message.clone(),
        })
        .collect()
}

fn fields_body(errors: Vec<FieldProblem>) -> ErrorBody {
    let message = match errors.as_slice() {
        [one] => format!("invalid request: {}: {}", one.field, one.error),
        _ => "invalid request".to_owned(),
    };
    ErrorBody { message, errors }
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
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Plane(e) => Answer::of(e).status(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ApiError::Validation(errors) => return fields_body(errors.clone()),
            ApiError::Plane(e) => match Answer::of(e) {
                Answer::Fields(errors) => return fields_body(errors),
                Answer::Refused(_) => e.to_string(),
                Answer::Unavailable { message, .. } => message,
                Answer::Internal => format!("internal error: {e}"),
            },
            other => other.to_string(),
        };
        ErrorBody {
            message,
            errors: Vec::new(),
        }
    }
}

impl From<palisade_policy::ValidationErrors> for ApiError {
    fn from(e: palisade_policy::ValidationErrors) -> Self {
        ApiError::Validation(problems(&e))
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
        if let ApiError::Plane(cause) = &self {
            match Answer::of(cause) {
                Answer::Internal => {
                    tracing::error!(error = %cause.chain(), "internal error answered with 500");
                }
                Answer::Unavailable { logged: true, .. } => {
                    tracing::error!(error = %cause.chain(), "host fault answered with 503");
                }
                _ => {}
            }
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
