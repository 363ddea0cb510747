//! `/v1/sandbox…`: create, get, list, delete, pause, execute.

use axum::Json;
use axum::http::StatusCode;
use palisade_store::{SandboxSort, SandboxState};

use super::{Cp, Created, OrgItem, Reply, created, sort_and_page};
use crate::control::{CreateSandbox, ListSandboxes, OrgId};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Params};
use crate::model::{
    CreateSandboxRequest, ExecuteRequest, Paged, ProcessResponse, SandboxListItem, SandboxResponse,
};

/// The `sort` values the listing takes, the first the default.
const SORTS: [(&str, SandboxSort); 2] = [
    ("created_at", SandboxSort::CreatedAt),
    ("state", SandboxSort::State),
];

#[utoipa::path(post, path = "/v1/sandbox", tag = "sandboxes", request_body = CreateSandboxRequest,
    responses((status = 201, body = SandboxResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown template"),
              (status = 429, body = ErrorBody, description = "sandbox quota reached")))]
pub(crate) async fn create(cp: Cp, org: OrgId, cmd: CreateSandbox) -> Created<SandboxResponse> {
    Ok(created(cp.create_sandbox(&org, cmd).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(("state" = Option<String>, Query), ("sort" = Option<String>, Query, description = "created_at | state"),
           ("order-by" = Option<String>, Query, description = "asc | desc"), ("page" = Option<u32>, Query),
           ("page-size" = Option<u32>, Query, description = "1..=100")),
    responses((status = 200, body = Paged<SandboxListItem>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(cp: Cp, org: OrgId, q: Params) -> Reply<Paged<SandboxListItem>> {
    let state = match q.get("state") {
        None | Some("") => None,
        Some(s) => Some(SandboxState::parse(s).ok_or_else(|| {
            ApiError::field("state", "must be one of starting, snapshotting, running, paused, unpausing, deleting, deleted")
        })?),
    };
    let listing = sort_and_page(&q, &SORTS)?;
    let query = ListSandboxes { state, listing };
    Ok(Json(cp.list_sandboxes(&org, query).await?.into()))
}

#[utoipa::path(get, path = "/v1/sandbox/{id}/", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = SandboxResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(cp: Cp, OrgItem { org, id }: OrgItem) -> Reply<SandboxResponse> {
    Ok(Json(cp.get_sandbox(&org, &id).await?.into()))
}

#[utoipa::path(delete, path = "/v1/sandbox/{id}/", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(cp: Cp, OrgItem { org, id }: OrgItem) -> Result<StatusCode, ApiError> {
    cp.delete_sandbox(&org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandbox/{id}/pause", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 201, body = SandboxResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn pause(cp: Cp, OrgItem { org, id }: OrgItem) -> Created<SandboxResponse> {
    Ok(created(cp.pause_sandbox(&org, &id).await?))
}

#[utoipa::path(post, path = "/v1/sandbox/{id}/process/execute", tag = "process", params(("id" = String, Path)),
    request_body = ExecuteRequest,
    responses((status = 200, body = ProcessResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn execute(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> Reply<ProcessResponse> {
    Ok(Json(cp.execute(&org, &id, req.try_into()?).await?.into()))
}
