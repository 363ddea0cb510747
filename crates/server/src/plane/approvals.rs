//! The approval queue as the control plane drives it: listing and streaming an organisation's
//! pending approvals, and decisions, of which allow-always and deny-always go through the
//! policy update path (stored as a new version, enforced) before the held requests move on.

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use palisade_policy::CanonicalName;
use tokio::sync::broadcast::error::RecvError;

use super::convert::full_policy;
use super::{Plane, PlaneError, Result};
use crate::control::{ApprovalDecided, ApprovalUpdate, ApprovalView, Decision, OrgId};

impl Plane {
    /// The organisation's pending approvals (`on_unknown: "hold"`), oldest first.
    pub fn list_approvals(&self, org: &OrgId) -> Vec<ApprovalView> {
        self.registry.approvals().list(&org.0)
    }

    /// Changes of the organisation's queue as they happen, after one `Pending` per approval
    /// already waiting.
    pub fn subscribe_approvals(&self, org: &OrgId) -> BoxStream<'static, ApprovalUpdate> {
        let approvals = self.registry.approvals();
        // Subscribe first, then list: an approval made in between shows twice (harmless, the
        // same id), never not at all.
        let rx = approvals.subscribe();
        let current: Vec<ApprovalUpdate> = approvals
            .list(&org.0)
            .into_iter()
            .map(ApprovalUpdate::Pending)
            .collect();
        let org = org.0.clone();
        let live = stream::unfold(rx, move |mut rx| {
            let org = org.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(u) if u.approval().org == org => return Some((u, rx)),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        });
        stream::iter(current).chain(live).boxed()
    }

    /// Decides a pending approval; allow-always and deny-always change the sandbox's policy
    /// (stored, enforced) before what is held is released or refused.
    pub async fn decide_approval(
        &self,
        org: &OrgId,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalDecided> {
        let approvals = self.registry.approvals();
        let pending = approvals
            .get(&org.0, id)
            .map_err(|_| PlaneError::NotFound("approval"))?;
        let policy_version = match decision {
            Decision::AllowAlways | Decision::DenyAlways => {
                Some(self.remember(org, &pending, decision).await?)
            }
            Decision::AllowOnce | Decision::Deny => None,
        };
        // It may have timed out meanwhile: the policy change stands (the person asked for
        // it), and what was held was already refused.
        let approval = approvals.resolve(&org.0, id, decision).unwrap_or(pending);
        Ok(ApprovalDecided {
            approval,
            decision,
            policy_version,
        })
    }

    /// Writes an "always" decision into the sandbox's live policy through the same path as
    /// `PUT …/network-policy`: a new stored version, rules and data plane updated.
    async fn remember(
        &self,
        org: &OrgId,
        pending: &ApprovalView,
        decision: Decision,
    ) -> Result<i64> {
        let name: CanonicalName = pending
            .name
            .parse()
            .map_err(|_| PlaneError::CorruptPolicy("held name is not canonical".into()))?;
        let live = self.store.live_policy(&pending.sandbox).await?;
        let policy = full_policy(live.full.expose())?;
        let updated = match decision {
            Decision::AllowAlways => policy.with_allowed_name(&name),
            _ => policy.with_denied_name(&name),
        }
        .map_err(|e| {
            PlaneError::Conflict(format!(
                "cannot {} {}: {e}",
                decision.as_str(),
                pending.name
            ))
        })?;
        Ok(self
            .update_network_policy(org, &pending.sandbox, updated)
            .await?
            .version)
    }
}
