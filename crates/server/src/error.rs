//! The Leap0 error shape: `{"message": "...", "errors": [{"field": "...", "error": "..."}]}`
//! with the status the SDKs map to their exception classes (400, 401, 404, 409, 429, 500).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

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

/// What went wrong, as the API reports it. Internal details are logged, never sent.
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
    #[error("internal error")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 400 naming one field.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldProblem {
            field: field.into(),
            error: error.into(),
        }])
    }

    /// A 500 whose detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError::Internal(detail.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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

impl From<palisade_store::StoreError> for ApiError {
    fn from(e: palisade_store::StoreError) -> Self {
        use palisade_store::StoreError as S;
        match e {
            S::NotFound(what) => ApiError::NotFound(what),
            S::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            other => match other.storage_fault() {
                // Said plainly (503, retry later); the detail still goes to the log.
                Some(fault) => {
                    tracing::error!(error = %other, "store unavailable");
                    ApiError::Unavailable(format!("{fault}; try again later"))
                }
                None => ApiError::internal(other),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answered with 500");
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
        let e = ApiError::internal("sqlite: disk I/O error at /secret/path");
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("/secret/path"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn validation_message_names_the_field() {
        let b = ApiError::field("vcpu", "must be between 1 and 8").body();
        assert_eq!(b.errors[0].field, "vcpu");
        assert!(b.message.contains("vcpu"));
    }
}
