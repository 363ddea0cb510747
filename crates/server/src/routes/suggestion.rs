//! Beyond Leap0: the policy a sandbox's recorded traffic suggests, and applying it live.

use axum::Json;

use super::{Cp, OrgItem, Reply};
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::model::{ApplySuggestionRequest, ApplySuggestionResponse};
use crate::suggest::Suggestion;

/// The smallest `custom` policy that would have allowed everything the sandbox did, from the
/// events the daemon keeps for it, each entry with its evidence.
#[utoipa::path(get, path = "/v1/sandbox/{id}/network-policy/suggestion", tag = "network",
    params(("id" = String, Path)),
    responses((status = 200, body = Suggestion), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(cp: Cp, OrgItem { org, id }: OrgItem) -> Reply<Suggestion> {
    Ok(Json(cp.network_policy_suggestion(&org, &id).await?))
}

/// Computes the suggestion and applies it as a live policy update (answered once enforced);
/// audit mode goes off unless `keep_audit`.
#[utoipa::path(post, path = "/v1/sandbox/{id}/network-policy/suggestion/apply", tag = "network",
    params(("id" = String, Path)), request_body = ApplySuggestionRequest,
    responses((status = 200, body = ApplySuggestionResponse),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn apply(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    JsonBody(body): JsonBody<ApplySuggestionRequest>,
) -> Reply<ApplySuggestionResponse> {
    let (policy, suggestion) = cp
        .apply_network_policy_suggestion(&org, &id, body.keep_audit)
        .await?;
    Ok(Json(ApplySuggestionResponse {
        policy: policy.into(),
        suggestion,
    }))
}
