//! Prometheus metrics, served on the admin listener (bound to loopback by the binary).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The registry and the API's own metrics. Other parts (firewall, runtime) register theirs in
/// [`Metrics::registry`] before the admin listener starts.
#[derive(Debug)]
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("api_requests", "API requests answered", requests.clone());
        registry.register(
            "api_request_seconds",
            "API request latency",
            latency.clone(),
        );
        Self {
            registry: std::sync::Mutex::new(registry),
            requests,
            latency,
        }
    }
}

impl Metrics {
    /// Register more metrics (call before serving).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
        self.registry.lock().ok().map(|mut r| f(&mut r))
    }

    /// Counts the firewall's egress events by verdict
    /// (`palisade_egress_events_total{verdict="allow"|"deny"|"would-deny"}`) from its live log,
    /// until the log goes away. Call before serving; a lagging counter skips, never blocks.
    pub fn count_egress_events(&self, log: &palisade_firewall::EventLog) {
        let family = Family::<VerdictLabels, Counter>::default();
        if self
            .with_registry(|r| {
                r.register(
                    "egress_events",
                    "Egress decisions by verdict (would-deny: let through in audit mode)",
                    family.clone(),
                );
            })
            .is_none()
        {
            return;
        }
        for verdict in ["allow", "deny", "would-deny"] {
            // Created at zero so a scrape shows every verdict before the first event.
            drop(family.get_or_create(&VerdictLabels { verdict }));
        }
        let mut rx = log.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        family
                            .get_or_create(&VerdictLabels {
                                verdict: e.verdict.as_str(),
                            })
                            .inc();
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// The text exposition format.
    pub fn encode(&self) -> Option<String> {
        let mut out = String::new();
        let registry = self.registry.lock().ok()?;
        prometheus_client::encoding::text::encode(&mut out, &registry).ok()?;
        Some(out)
    }
}

/// Middleware counting API requests by route template (never by raw path: ids would explode
/// the label set).
pub(crate) async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    m.latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The admin router: `GET /metrics`. Serve it on a loopback listener only.
pub fn admin_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                match m.encode() {
                    Some(body) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use palisade_firewall::EventLog;
    use palisade_firewall::decision::RuleRef;
    use palisade_firewall::events::{EgressEvent, EventKind, EventVerdict};

    use super::Metrics;

    #[tokio::test]
    async fn egress_events_are_counted_by_verdict() {
        let m = Metrics::default();
        let log = EventLog::new(16);
        m.count_egress_events(&log);
        for v in [
            EventVerdict::WouldDeny,
            EventVerdict::WouldDeny,
            EventVerdict::Deny,
        ] {
            log.record(EgressEvent::new("sb", EventKind::Tcp, v, RuleRef::Address));
        }
        let mut text = String::new();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            text = m.encode().unwrap();
            if text.contains("palisade_egress_events_total{verdict=\"would-deny\"} 2") {
                break;
            }
        }
        assert!(
            text.contains("palisade_egress_events_total{verdict=\"would-deny\"} 2"),
            "{text}"
        );
        assert!(text.contains("palisade_egress_events_total{verdict=\"deny\"} 1"));
        assert!(text.contains("palisade_egress_events_total{verdict=\"allow\"} 0"));
    }
}
