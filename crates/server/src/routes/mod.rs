//! Handlers: each parses its request into a typed command, makes one call on the control
//! plane and shapes the answer. No decisions are taken here.

pub(crate) mod approvals;
pub(crate) mod network;
pub(crate) mod sandboxes;
pub(crate) mod snapshots;
pub(crate) mod suggestion;
pub(crate) mod templates;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::ExtensionRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use futures_util::{Stream, StreamExt};
use palisade_store::Order;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::{Listing, OrgId};
use crate::error::ApiError;
use crate::extract::Params;
use crate::plane::Plane;

pub(crate) type Cp = axum::extract::State<Arc<Plane>>;

/// Every route behind the API key, one operation a line. Each path is written once, in its
/// handler's `#[utoipa::path]`, which both serves it and describes it in the OpenAPI document;
/// the operations of one path merge into one route.
pub(crate) fn table() -> OpenApiRouter<Arc<Plane>> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(sandboxes::create))
        .routes(routes!(sandboxes::list))
        .routes(routes!(sandboxes::get))
        .routes(routes!(sandboxes::delete))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::execute))
        .routes(routes!(snapshots::create))
        .routes(routes!(snapshots::pause))
        .routes(routes!(snapshots::list))
        .routes(routes!(snapshots::delete))
        .routes(routes!(snapshots::restore))
        .routes(routes!(snapshots::resume))
        .routes(routes!(network::put_policy))
        .routes(routes!(network::get_policy))
        .routes(routes!(network::events))
        .routes(routes!(suggestion::get))
        .routes(routes!(suggestion::apply))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::stream))
        .routes(routes!(approvals::decide))
        .routes(routes!(templates::create))
        .routes(routes!(templates::list))
        .routes(routes!(templates::rename))
        .routes(routes!(templates::delete))
        .routes(routes!(templates::build))
        // Clients spell a sandbox's path with and without the trailing slash; the document
        // names the one the SDKs send.
        .route(
            "/v1/sandbox/{id}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
}

/// What a handler answers: its body, or the error as the API reports it.
pub(crate) type Reply<T> = Result<Json<T>, ApiError>;

/// What a create answers: `201 Created` with the new resource (see [`created`]).
pub(crate) type Created<T> = Result<(StatusCode, Json<T>), ApiError>;

/// The organisation the request is authenticated as (put there by the auth middleware) and
/// the `{id}` its path names: what every handler of one resource starts from.
pub(crate) struct OrgItem {
    pub(crate) org: OrgId,
    pub(crate) id: String,
}

/// The organisation the request is authenticated as: what every handler of a collection starts
/// from. The auth middleware puts it in the request's extensions.
impl<S: Send + Sync> FromRequestParts<S> for OrgId {
    // The extension extractor's own rejection, unchanged, so that a handler answers as it did
    // when it took `Extension<OrgId>`.
    type Rejection = ExtensionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Extension(org) = Extension::<OrgId>::from_request_parts(parts, state).await?;
        Ok(org)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OrgItem {
    // The two extractors' own rejections, unchanged, so that a handler answers as it did when
    // it took `Extension<OrgId>` and `Path<String>` apart.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let org = OrgId::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { org, id })
    }
}

/// A live stream as server-sent events, kept alive while nothing happens.
pub(crate) fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A `201 Created` answer with the plane's result as its body.
pub(crate) fn created<T, B: From<T>>(item: T) -> (StatusCode, Json<B>) {
    (StatusCode::CREATED, Json(item.into()))
}

fn order_param(q: &Params) -> Result<Order, ApiError> {
    match q.get("order-by").or_else(|| q.get("order_by")) {
        None | Some("desc") => Ok(Order::Desc),
        Some("asc") => Ok(Order::Asc),
        Some(_) => Err(ApiError::field(
            "order-by",
            "must be one of ['asc', 'desc']",
        )),
    }
}

/// The value of the query parameter `name` among `choices` (the first is the default when it is
/// absent), or a 400 listing them.
fn choice_param<T: Copy>(q: &Params, name: &str, choices: &[(&str, T)]) -> Result<T, ApiError> {
    let found = match q.get(name) {
        None => choices.first(),
        Some(v) => choices.iter().find(|(c, _)| *c == v),
    };
    found.map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<String> = choices.iter().map(|(c, _)| format!("'{c}'")).collect();
        ApiError::field(name, format!("must be one of [{}]", names.join(", ")))
    })
}

/// What every paged listing takes besides its filter: the `sort` (one of `sorts`, the first the
/// default), the order, the page and its size.
pub(crate) fn sort_and_page<S: Copy>(
    q: &Params,
    sorts: &[(&str, S)],
) -> Result<Listing<S>, ApiError> {
    let sort = choice_param(q, "sort", sorts)?;
    let (page, page_size) = paging(q)?;
    Ok(Listing {
        sort,
        order: order_param(q)?,
        page,
        page_size,
    })
}

/// The control plane's results as their response bodies.
pub(crate) fn bodies<T, B: From<T>>(items: Vec<T>) -> Vec<B> {
    items.into_iter().map(Into::into).collect()
}

fn paging(q: &Params) -> Result<(u32, u32), ApiError> {
    let page = q.int("page", 1, i64::from(u32::MAX))?.unwrap_or(1);
    let size = match q.int("page-size", 1, 100)? {
        Some(s) => s,
        None => q.int("page_size", 1, 100)?.unwrap_or(20),
    };
    Ok((
        u32::try_from(page).unwrap_or(1),
        u32::try_from(size).unwrap_or(20),
    ))
}
