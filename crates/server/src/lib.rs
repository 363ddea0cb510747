//! The control plane's HTTP face: a Leap0-compatible REST API (both SDK 0.6.1 and 0.8 shapes)
//! plus Palisade's own endpoints (live policy update, egress events, OpenAPI, metrics).
//!
//! Handlers only translate: HTTP in, a typed call on [`Plane`](plane::Plane), JSON out.
//! Auth, error shape, request parsing and response shaping live here; decisions live in the
//! plane.

#![forbid(unsafe_code)]

mod auth;
pub mod console;
pub mod control;
pub mod error;
mod extract;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod plane;
mod routes;
pub mod suggest;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod time;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router, middleware};

pub use error::ApiError;
pub use metrics::{Metrics, admin_router};

use plane::Plane;

/// The public API router, with the web console under `/console/` and the OpenAPI document
/// of the same routes at `/openapi.json`. `metrics` counts every request by route.
pub fn api_router(cp: Arc<Plane>, metrics: Arc<Metrics>) -> Router {
    let (authed, doc) = routes::table().split_for_parts();
    let authed = authed
        .route_layer(middleware::from_fn_with_state(
            cp.clone(),
            auth::require_key,
        ))
        .with_state(cp);
    Router::new()
        .route("/openapi.json", get(|| async move { Json(doc) }))
        .merge(console::router())
        .merge(authed)
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}
