//! Beyond Leap0: live policy updates and the egress event API (JSON or a live SSE stream).

use axum::Json;
use axum::http::{HeaderMap, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{Cp, OrgItem, Reply, bodies, sse};
use crate::control::EventFilter;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Params};
use crate::model::{EventListResponse, EventResponse, PolicyResponse, parse_policy};

#[utoipa::path(put, path = "/v1/sandbox/{id}/network-policy", tag = "network", params(("id" = String, Path)),
    request_body = palisade_policy::NetworkPolicySpec,
    responses((status = 200, body = PolicyResponse, description = "answered once the data plane enforces the new version"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_policy(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Reply<PolicyResponse> {
    // Accept the policy itself, or wrapped as {"network_policy": {...}}.
    let value = match body {
        serde_json::Value::Object(mut m) if m.len() == 1 && m.contains_key("network_policy") => {
            m.remove("network_policy").unwrap_or_default()
        }
        other => other,
    };
    let policy = parse_policy(Some(value))?
        .ok_or_else(|| ApiError::field("network_policy", "is required"))?;
    Ok(Json(
        cp.update_network_policy(&org, &id, policy).await?.into(),
    ))
}

#[utoipa::path(get, path = "/v1/sandbox/{id}/network-policy", tag = "network", params(("id" = String, Path)),
    responses((status = 200, body = PolicyResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_policy(cp: Cp, OrgItem { org, id }: OrgItem) -> Reply<PolicyResponse> {
    Ok(Json(cp.get_network_policy(&org, &id).await?.into()))
}

fn filter(q: &Params) -> Result<EventFilter, ApiError> {
    let verdict = match q.get("verdict") {
        None | Some("") => None,
        Some(v @ ("allow" | "deny" | "would-deny" | "hold")) => Some(v.to_owned()),
        Some(_) => {
            return Err(ApiError::field(
                "verdict",
                "must be 'allow', 'deny', 'would-deny' or 'hold'",
            ));
        }
    };
    let name = q.get("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > 253) {
        return Err(ApiError::field("name", "must be at most 253 characters"));
    }
    Ok(EventFilter {
        verdict,
        name,
        since_ms: q.int("since", 0, i64::MAX)?,
        until_ms: q.int("until", 0, i64::MAX)?,
        after_id: q.int("after", 0, i64::MAX)?,
        before_id: q.int("before", 0, i64::MAX)?,
        limit: q.int("limit", 1, 1000)?.and_then(|l| u32::try_from(l).ok()),
    })
}

/// Stored events as JSON, or — with `follow=true` or `Accept: text/event-stream` — a live
/// server-sent event stream (`event: egress`, one JSON event per message).
#[utoipa::path(get, path = "/v1/sandbox/{id}/network/events", tag = "network",
    params(("id" = String, Path), ("verdict" = Option<String>, Query, description = "allow | deny | would-deny"),
           ("name" = Option<String>, Query), ("since" = Option<i64>, Query, description = "Unix ms"),
           ("until" = Option<i64>, Query, description = "Unix ms"), ("after" = Option<i64>, Query, description = "event id"),
           ("before" = Option<i64>, Query, description = "event id"), ("limit" = Option<u32>, Query, description = "1..=1000"),
           ("follow" = Option<bool>, Query, description = "stream live events (SSE)")),
    responses((status = 200, body = EventListResponse, description = "JSON, or text/event-stream when following"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn events(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let f = filter(&q)?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let follow = match q.get("follow") {
        None => wants_sse,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => return Err(ApiError::field("follow", "must be true or false")),
    };
    if !follow {
        let items = bodies(cp.list_events(&org, &id, f).await?);
        return Ok(Json(EventListResponse { items }).into_response());
    }
    let stream = cp.subscribe_events(&org, &id, f).await?.map(|e| {
        let id = e.id;
        let data = serde_json::to_string(&EventResponse::from(e)).unwrap_or_default();
        Event::default()
            .event("egress")
            .id(id.to_string())
            .data(data)
    });
    Ok(sse(stream))
}
