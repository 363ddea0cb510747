//! Snapshots: create (and pause-snapshot) from a sandbox, list, delete, restore/resume.

use axum::Json;
use axum::http::StatusCode;
use palisade_store::SnapshotSort;

use super::{Cp, Created, OrgItem, Reply, created, sort_and_page};
use crate::control::{CreateSnapshot, ListSnapshots, OrgId, RestoreSnapshot};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Params;
use crate::model::{
    CreateSnapshotRequest, Paged, RestoreSnapshotRequest, SandboxResponse, SnapshotResponse,
};

/// The `sort` values the listing takes, the first the default.
const SORTS: [(&str, SnapshotSort); 2] = [
    ("created_at", SnapshotSort::CreatedAt),
    ("template_id", SnapshotSort::TemplateId),
];

#[utoipa::path(post, path = "/v1/sandbox/{id}/snapshot/create", tag = "snapshots", params(("id" = String, Path)),
    request_body = CreateSnapshotRequest,
    responses((status = 201, body = SnapshotResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    cp: Cp,
    item: OrgItem,
    cmd: CreateSnapshot,
) -> Created<SnapshotResponse> {
    Ok(created(cp.create_snapshot(&item.org, &item.id, cmd).await?))
}

#[utoipa::path(post, path = "/v1/sandbox/{id}/snapshot/pause", tag = "snapshots", params(("id" = String, Path)),
    request_body = CreateSnapshotRequest,
    responses((status = 201, body = SnapshotResponse, description = "snapshot stored, sandbox stopped"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn pause(cp: Cp, item: OrgItem, cmd: CreateSnapshot) -> Created<SnapshotResponse> {
    create(cp, item, cmd.stopping()).await
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    params(("query" = Option<String>, Query, description = "name contains"),
           ("sort" = Option<String>, Query, description = "created_at | template_id"),
           ("order-by" = Option<String>, Query), ("page" = Option<u32>, Query), ("page-size" = Option<u32>, Query)),
    responses((status = 200, body = Paged<SnapshotResponse>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(cp: Cp, org: OrgId, q: Params) -> Reply<Paged<SnapshotResponse>> {
    let query = q.get("query").unwrap_or("").to_owned();
    if query.chars().count() > 64 {
        return Err(ApiError::field("query", "must be at most 64 characters"));
    }
    let listing = sort_and_page(&q, &SORTS)?;
    let list = ListSnapshots { query, listing };
    Ok(Json(cp.list_snapshots(&org, list).await?.into()))
}

#[utoipa::path(delete, path = "/v1/snapshot/{id}", tag = "snapshots", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(cp: Cp, OrgItem { org, id }: OrgItem) -> Result<StatusCode, ApiError> {
    cp.delete_snapshot(&org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Served at both `/v1/snapshot/restore` (SDK 0.8) and `/v1/snapshot/resume` (SDK 0.6.1).
#[utoipa::path(post, path = "/v1/snapshot/restore", tag = "snapshots", request_body = RestoreSnapshotRequest,
    responses((status = 201, body = SandboxResponse, description = "a new sandbox, with the snapshot's policy unless one is given"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn restore(cp: Cp, org: OrgId, cmd: RestoreSnapshot) -> Created<SandboxResponse> {
    Ok(created(cp.restore_snapshot(&org, cmd).await?))
}

#[utoipa::path(post, path = "/v1/snapshot/resume", tag = "snapshots", request_body = RestoreSnapshotRequest,
    responses((status = 201, body = SandboxResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn resume(cp: Cp, org: OrgId, cmd: RestoreSnapshot) -> Created<SandboxResponse> {
    restore(cp, org, cmd).await
}
