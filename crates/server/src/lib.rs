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
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router, middleware};

pub use error::ApiError;
pub use metrics::{Metrics, admin_router};

use plane::Plane;
use routes::{approvals, network, sandboxes, snapshots, suggestion, templates};

/// The public API router, with the web console under `/console/`. `metrics` counts every
/// request by route.
pub fn api_router(cp: Arc<Plane>, metrics: Arc<Metrics>) -> Router {
    let one_sandbox = || get(sandboxes::get).delete(sandboxes::delete);
    let authed = Router::new()
        // Sandboxes, each served with and without the trailing slash: clients spell it both ways.
        .route("/v1/sandbox", post(sandboxes::create))
        .route("/v1/sandboxes", get(sandboxes::list))
        .route("/v1/sandbox/{id}", one_sandbox())
        .route("/v1/sandbox/{id}/", one_sandbox())
        .route("/v1/sandbox/{id}/pause", post(sandboxes::pause))
        .route("/v1/sandbox/{id}/process/execute", post(sandboxes::execute))
        // Snapshots, taken from a sandbox and restored into a new one.
        .route("/v1/sandbox/{id}/snapshot/create", post(snapshots::create))
        .route("/v1/sandbox/{id}/snapshot/pause", post(snapshots::pause))
        .route("/v1/snapshots", get(snapshots::list))
        .route("/v1/snapshot/{id}", delete(snapshots::delete))
        .route("/v1/snapshot/restore", post(snapshots::restore))
        .route("/v1/snapshot/resume", post(snapshots::resume))
        // A sandbox's network: its live policy, its egress events, a policy learnt from them.
        .route(
            "/v1/sandbox/{id}/network-policy",
            put(network::put_policy).get(network::get_policy),
        )
        .route("/v1/sandbox/{id}/network/events", get(network::events))
        .route(
            "/v1/sandbox/{id}/network-policy/suggestion",
            get(suggestion::get),
        )
        .route(
            "/v1/sandbox/{id}/network-policy/suggestion/apply",
            post(suggestion::apply),
        )
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/stream", get(approvals::stream))
        .route("/v1/approvals/{id}", post(approvals::decide))
        // Templates.
        .route("/v1/template", post(templates::create))
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/template/{id}",
            patch(templates::rename).delete(templates::delete),
        )
        .route("/v1/template/{id}/build", post(templates::build))
        .route_layer(middleware::from_fn_with_state(
            cp.clone(),
            auth::require_key,
        ))
        .with_state(cp);
    Router::new()
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(console::router())
        .merge(authed)
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}
