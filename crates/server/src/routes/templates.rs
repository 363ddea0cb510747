//! Templates: create, list, rename, delete, build.

use axum::Json;
use axum::http::StatusCode;

use super::{Cp, Created, OrgItem, Reply, bodies, created};
use crate::control::{CreateTemplate, OrgId};
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::model::{
    CreateTemplateRequest, RenameTemplateRequest, TemplateListResponse, TemplateResponse,
};

#[utoipa::path(post, path = "/v1/template", tag = "templates", request_body = CreateTemplateRequest,
    responses((status = 201, body = TemplateResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(cp: Cp, org: OrgId, cmd: CreateTemplate) -> Created<TemplateResponse> {
    Ok(created(cp.create_template(&org, cmd).await?))
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateListResponse)))]
pub(crate) async fn list(cp: Cp, org: OrgId) -> Reply<TemplateListResponse> {
    let items = bodies(cp.list_templates(&org).await?);
    Ok(Json(TemplateListResponse { items }))
}

#[utoipa::path(patch, path = "/v1/template/{id}", tag = "templates", params(("id" = String, Path)),
    request_body = RenameTemplateRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rename(
    cp: Cp,
    OrgItem { org, id }: OrgItem,
    JsonBody(req): JsonBody<RenameTemplateRequest>,
) -> Result<StatusCode, ApiError> {
    cp.rename_template(&org, &id, req.into_name()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/template/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "in use")))]
pub(crate) async fn delete(cp: Cp, OrgItem { org, id }: OrgItem) -> Result<StatusCode, ApiError> {
    cp.delete_template(&org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/template/{id}/build", tag = "templates", params(("id" = String, Path)),
    responses((status = 202, body = TemplateResponse, description = "build started, joined, or already ready: see build_state"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn build(cp: Cp, OrgItem { org, id }: OrgItem) -> Created<TemplateResponse> {
    let template = cp.build_template(&org, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(template.into())))
}
