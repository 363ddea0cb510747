//! Applying a policy suggestion on the real plane: the suggestion's lists over the full live
//! policy, so transforms keep their secrets (the API only ever shows them redacted).

use palisade_policy::Policy;

use super::convert::full_policy;
use super::{Plane, PlaneError, Result};
use crate::control::{OrgId, PolicyInfo};
use crate::suggest::{self, Suggestion};

impl Plane {
    /// The smallest policy that would have allowed what the sandbox did (its kept events),
    /// built from the plane's public calls alone.
    pub async fn network_policy_suggestion(&self, org: &OrgId, id: &str) -> Result<Suggestion> {
        suggest::gather(self, org, id).await
    }

    /// Applies the suggestion live (as [`Plane::update_network_policy`]), audit off unless
    /// `keep_audit`: its lists go over the full live policy, so transforms keep their secrets.
    pub async fn apply_network_policy_suggestion(
        &self,
        org: &OrgId,
        id: &str,
        keep_audit: bool,
    ) -> Result<(PolicyInfo, Suggestion)> {
        let suggestion = suggest::gather(self, org, id).await?;
        let rec = self.store.get_sandbox(&org.0, id).await?;
        let live = self.store.live_policy(&rec.sandbox.id).await?;
        let full: Policy = full_policy(live.full.expose())?;
        let policy =
            suggest::apply_to(&full, &suggestion, keep_audit).map_err(PlaneError::Policy)?;
        let info = self.update_network_policy(org, id, policy).await?;
        Ok((info, suggestion))
    }
}
