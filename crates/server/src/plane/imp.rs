//! [`ControlPlane`] for [`Plane`]: each method is one call into the plane's modules.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use palisade_policy::Policy;
use palisade_store::EgressEventRecord;

use super::Plane;
use super::PlaneError;
use super::sandboxes::Launch;
use crate::control::*;

#[async_trait]
impl ControlPlane for Plane {
    async fn authenticate(&self, api_key: &str) -> Result<Option<OrgId>, PlaneError> {
        Ok(self
            .store
            .authenticate(api_key)
            .await?
            .map(|k| OrgId(k.org_id)))
    }

    async fn create_sandbox(
        &self,
        org: &OrgId,
        req: CreateSandbox,
    ) -> Result<SandboxInfo, PlaneError> {
        let template = self.template_by_name(org, &req.template_name).await?;
        self.launch(
            org,
            Launch {
                template,
                vcpu: req.vcpu,
                memory_mib: req.memory_mib,
                timeout_secs: req.timeout_secs,
                auto_pause: req.auto_pause,
                env: req.env_vars,
                policy: req.network_policy.unwrap_or_else(Policy::allow_all),
                archive: None,
            },
        )
        .await
    }

    async fn get_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo, PlaneError> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        self.info(rec).await
    }

    async fn list_sandboxes(
        &self,
        org: &OrgId,
        q: ListSandboxes,
    ) -> Result<Page<SandboxInfo>, PlaneError> {
        let page = self.store.list_sandboxes(&org.0, &q).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for rec in page.items {
            items.push(self.info(rec).await?);
        }
        Ok(Page {
            items,
            total: page.total,
        })
    }

    async fn delete_sandbox(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        self.delete(org, id).await
    }

    async fn pause_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo, PlaneError> {
        self.pause(org, id).await
    }

    async fn execute(&self, org: &OrgId, id: &str, req: Execute) -> Result<ExecResult, PlaneError> {
        self.exec(org, id, req).await
    }

    async fn create_snapshot(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        req: CreateSnapshot,
    ) -> Result<SnapshotInfo, PlaneError> {
        self.snapshot(org, sandbox_id, req).await
    }

    async fn list_snapshots(
        &self,
        org: &OrgId,
        q: ListSnapshots,
    ) -> Result<Page<SnapshotInfo>, PlaneError> {
        Plane::list_snapshots(self, org, q).await
    }

    async fn delete_snapshot(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        Plane::delete_snapshot(self, org, id).await
    }

    async fn restore_snapshot(
        &self,
        org: &OrgId,
        req: RestoreSnapshot,
    ) -> Result<SandboxInfo, PlaneError> {
        self.restore(org, req).await
    }

    async fn create_template(
        &self,
        org: &OrgId,
        req: CreateTemplate,
    ) -> Result<TemplateInfo, PlaneError> {
        Plane::create_template(self, org, req).await
    }

    async fn list_templates(&self, org: &OrgId) -> Result<Vec<TemplateInfo>, PlaneError> {
        Ok(self
            .store
            .list_templates(&org.0)
            .await?
            .iter()
            .map(|t| self.template_view(t))
            .collect())
    }

    async fn rename_template(&self, org: &OrgId, id: &str, name: String) -> Result<(), PlaneError> {
        Ok(self.store.rename_template(&org.0, id, &name).await?)
    }

    async fn delete_template(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        Plane::delete_template(self, org, id).await
    }

    async fn build_template(&self, org: &OrgId, id: &str) -> Result<TemplateInfo, PlaneError> {
        Plane::build_template(self, org, id).await
    }

    async fn update_network_policy(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        policy: Policy,
    ) -> Result<PolicyInfo, PlaneError> {
        self.set_policy(org, sandbox_id, policy).await
    }

    async fn get_network_policy(
        &self,
        org: &OrgId,
        sandbox_id: &str,
    ) -> Result<PolicyInfo, PlaneError> {
        self.get_policy(org, sandbox_id).await
    }

    async fn list_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        filter: EventFilter,
    ) -> Result<Vec<EgressEventRecord>, PlaneError> {
        Plane::list_events(self, org, sandbox_id, filter).await
    }

    async fn subscribe_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        filter: EventFilter,
    ) -> Result<BoxStream<'static, EgressEventRecord>, PlaneError> {
        Plane::subscribe_events(self, org, sandbox_id, filter).await
    }

    async fn apply_network_policy_suggestion(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        keep_audit: bool,
    ) -> Result<(PolicyInfo, crate::suggest::Suggestion), PlaneError> {
        self.apply_suggestion(org, sandbox_id, keep_audit).await
    }

    async fn list_approvals(&self, org: &OrgId) -> Result<Vec<ApprovalView>, PlaneError> {
        Ok(self.pending_approvals(org))
    }

    async fn subscribe_approvals(
        &self,
        org: &OrgId,
    ) -> Result<BoxStream<'static, ApprovalUpdate>, PlaneError> {
        Ok(self.approval_updates(org))
    }

    async fn decide_approval(
        &self,
        org: &OrgId,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalDecided, PlaneError> {
        self.decide(org, id, decision).await
    }
}
