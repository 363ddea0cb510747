//! `/openapi.json`: the whole API, generated from the handlers and wire types. The paths come
//! from the route table itself (`routes::table`), so a route is served and described at once.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, FieldProblem};
use crate::model::*;
use crate::routes::approvals::{
    ApprovalDecisionRequest, ApprovalDecisionResponse, ApprovalListResponse, ApprovalResponse,
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Palisade", description = "Leap0-compatible sandbox API with an egress firewall."),
    components(schemas(
        ErrorBody, FieldProblem, palisade_policy::NetworkPolicySpec, CreateSandboxRequest,
        SandboxResponse, SizeFields, SandboxListItem, Paged<SandboxListItem>, ExecuteRequest, ProcessResponse,
        CreateSnapshotRequest, RestoreSnapshotRequest, SnapshotResponse, Paged<SnapshotResponse>,
        CreateTemplateRequest, RenameTemplateRequest, TemplateResponse, crate::control::BuildStatus,
        TemplateListResponse,
        PolicyResponse, EventResponse, palisade_store::EgressEventFields, EventListResponse,
        crate::suggest::Suggestion, crate::suggest::DomainEntry, crate::suggest::CidrEntry,
        crate::suggest::NotSuggested, crate::suggest::Evidence, ApplySuggestionRequest,
        ApplySuggestionResponse,
        ApprovalResponse, ApprovalListResponse, ApprovalDecisionResponse, ApprovalDecisionRequest,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("leap0_authorization" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "leap0_authorization",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("leap0-authorization"))),
        );
    }
}
