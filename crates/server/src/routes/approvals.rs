//! Beyond Leap0: the approval queue of `on_unknown: "hold"` policies — list, live stream,
//! decide.

use axum::Json;
use axum::response::Response;
use axum::response::sse::Event;
use futures_util::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Cp, OrgItem, Reply, bodies, sse};
use crate::control::{ApprovalDecided, ApprovalUpdate, ApprovalView, Decision, OrgId};
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::time::rfc3339;

/// A pending approval: a name a sandbox asked for that its policy does not list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalResponse {
    pub(crate) id: String,
    pub(crate) sandbox_id: String,
    /// The canonical name held.
    pub(crate) name: String,
    /// Destination ports of the held connections (empty for DNS alone).
    pub(crate) ports: Vec<u16>,
    /// What is held: `dns`, `tls`, `http`.
    pub(crate) kinds: Vec<String>,
    /// Queries and connections waiting on it now.
    pub(crate) held: usize,
    pub(crate) first_seen: String,
    pub(crate) expires: String,
    pub(crate) first_seen_ms: i64,
    pub(crate) expires_ms: i64,
}

impl From<ApprovalView> for ApprovalResponse {
    fn from(v: ApprovalView) -> Self {
        Self {
            kinds: v
                .kinds
                .iter()
                .filter_map(|k| serde_json::to_value(k).ok())
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            first_seen: rfc3339(v.first_seen_ms),
            expires: rfc3339(v.expires_ms),
            id: v.id,
            sandbox_id: v.sandbox,
            name: v.name,
            ports: v.ports,
            held: v.held,
            first_seen_ms: v.first_seen_ms,
            expires_ms: v.expires_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalListResponse {
    pub(crate) items: Vec<ApprovalResponse>,
}

/// A decision taken.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalDecisionResponse {
    pub(crate) approval: ApprovalResponse,
    /// `allow-once`, `allow-always`, `deny` or `deny-always`.
    pub(crate) decision: String,
    /// The policy version that enforces an allow-always or deny-always.
    pub(crate) policy_version: Option<i64>,
}

impl From<ApprovalDecided> for ApprovalDecisionResponse {
    fn from(d: ApprovalDecided) -> Self {
        Self {
            approval: d.approval.into(),
            decision: d.decision.as_str().to_owned(),
            policy_version: d.policy_version,
        }
    }
}

/// `{"decision": "allow-once" | "allow-always" | "deny" | "deny-always"}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[expect(
    dead_code,
    reason = "the body's schema for OpenAPI; it is parsed field by field"
)]
pub(crate) struct ApprovalDecisionRequest {
    pub(crate) decision: String,
}

const DECISIONS: &str =
    "must be one of \"allow-once\", \"allow-always\", \"deny\", \"deny-always\"";

fn parse_decision(body: serde_json::Value) -> Result<Decision, ApiError> {
    let serde_json::Value::Object(map) = body else {
        return Err(ApiError::field(
            "decision",
            "the body must be a JSON object",
        ));
    };
    if let Some(other) = map.keys().find(|k| *k != "decision") {
        return Err(ApiError::field(other.clone(), "unknown field"));
    }
    match map.get("decision") {
        None | Some(serde_json::Value::Null) => Err(ApiError::field("decision", "is required")),
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map_err(|()| ApiError::field("decision", DECISIONS)),
        Some(_) => Err(ApiError::field("decision", DECISIONS)),
    }
}

#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    responses((status = 200, body = ApprovalListResponse, description = "the organisation's pending approvals, oldest first")))]
pub(crate) async fn list(cp: Cp, org: OrgId) -> Reply<ApprovalListResponse> {
    let items = bodies(cp.list_approvals(&org));
    Ok(Json(ApprovalListResponse { items }))
}

/// Server-sent events: `event: pending` (an approval, new or joined; the ones already waiting
/// come first) and `event: resolved` (`{"approval": …, "decision": …}`, decision also
/// `timeout` or `removed`).
#[utoipa::path(get, path = "/v1/approvals/stream", tag = "approvals",
    responses((status = 200, description = "text/event-stream of pending and resolved approvals")))]
pub(crate) async fn stream(cp: Cp, org: OrgId) -> Result<Response, ApiError> {
    let updates = cp.subscribe_approvals(&org).map(|u| {
        let (kind, data) = match u {
            ApprovalUpdate::Pending(a) => {
                ("pending", serde_json::to_string(&ApprovalResponse::from(a)))
            }
            ApprovalUpdate::Resolved { approval, decision } => (
                "resolved",
                serde_json::to_string(&serde_json::json!({
                    "approval": ApprovalResponse::from(approval),
                    "decision": decision,
                })),
            ),
        };
        Event::default().event(kind).data(data.unwrap_or_default())
    });
    Ok(sse(updates))
}

#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    request_body = ApprovalDecisionRequest,
    responses((status = 200, body = ApprovalDecisionResponse, description = "decided; held requests released or refused"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the policy cannot take the name (e.g. allow_domains is full)")))]
pub(crate) async fn decide(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Reply<ApprovalDecisionResponse> {
    let decision = parse_decision(body)?;
    Ok(Json(cp.decide_approval(&org, &id, decision).await?.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decisions_are_parsed_strictly_with_the_field_named() {
        assert_eq!(
            parse_decision(json!({"decision": "allow-always"})).ok(),
            Some(Decision::AllowAlways)
        );
        for bad in [
            json!({}),
            json!({"decision": "allow"}),
            json!({"decision": 1}),
            json!([]),
        ] {
            let e = parse_decision(bad.clone()).unwrap_err();
            assert_eq!(e.body().errors[0].field, "decision", "{bad}");
        }
        let e = parse_decision(json!({"decision": "deny", "always": true})).unwrap_err();
        assert_eq!(e.body().errors[0].field, "always");
    }
}
