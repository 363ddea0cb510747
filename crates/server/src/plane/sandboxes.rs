//! Sandbox lifecycle: launch (store → network → rules → CA → data plane → runc), teardown,
//! pause, exec and live policy updates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_ca::SandboxCa;
use palisade_policy::Policy;
use palisade_runtime::{ExecRequest, SandboxSpec};
use palisade_store::{
    NewSandbox, Resources, SandboxRecord, SandboxState, StoreError, TemplateRecord, now_ms,
};
use tokio::sync::OwnedMutexGuard;

use super::PlaneError;
use super::convert::{policy_json, redacted_spec, sandbox_info};
use super::net::{rules, stored_addrs};
use super::{Plane, Result, templates::runtime_name};
use crate::control::{
    CreateSandbox, EnvVars, ExecResult, Execute, ListSandboxes, OrgId, Page, PolicyInfo,
    SandboxInfo,
};

/// Everything a new sandbox needs, from a create or a restore request.
#[derive(Debug)]
pub(super) struct Launch {
    pub template: TemplateRecord,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub timeout_secs: u32,
    pub auto_pause: bool,
    pub env: EnvVars,
    pub policy: Policy,
    /// A snapshot archive whose upper layer the sandbox starts from.
    pub archive: Option<PathBuf>,
}

/// Stopped into a snapshot: the row stays, the sandbox holds nothing (see `stop_locked`).
pub(super) fn is_stopped(rec: &SandboxRecord) -> bool {
    rec.sandbox.address.is_none()
}

/// What a change needs of the sandbox it locks (see [`Plane::lock_sandbox`]); each level
/// includes the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Needs {
    /// Its row, in any state.
    Row,
    /// Its network and rules: running or paused, else Conflict.
    Live,
    /// Its container too: live and not paused into a snapshot (container and address freed),
    /// else Conflict saying how to resume it.
    Container,
}

/// A request the sandbox's state forbids.
pub(super) fn state_conflict(rec: &SandboxRecord) -> PlaneError {
    PlaneError::Conflict(format!("sandbox is {}", rec.sandbox.state))
}

fn stopped_conflict(id: &str) -> PlaneError {
    PlaneError::Conflict(format!(
        "sandbox {id} is paused into a snapshot; resume it with /v1/snapshot/resume"
    ))
}

/// Ten lowercase hex digits: short enough for interface names (`plh-<id>`), random enough.
fn sandbox_id() -> String {
    palisade_store::new_id()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(10)
        .collect()
}

impl Plane {
    pub(super) async fn check_quota(&self, org: &OrgId) -> Result<()> {
        let max = self.store.get_org(&org.0).await?.max_sandboxes;
        if let Some(max) = max.or(self.cfg.default_quota)
            && self.store.count_active_sandboxes(&org.0).await? >= max
        {
            return Err(PlaneError::Quota(format!(
                "sandbox quota reached: at most {max} sandboxes at once for this organisation"
            )));
        }
        Ok(())
    }

    pub(super) async fn launch(&self, org: &OrgId, l: Launch) -> Result<SandboxInfo> {
        // Count and insert under the organisation's lock, so concurrent creates cannot all
        // pass the check before any of them is counted. (Sandbox ids are hex: no collision.)
        if l.archive.is_none() {
            // Before anything is taken: a template still building or failed answers at once.
            self.require_template(&l.template)?;
        }
        let quota_guard = self.locks.lock(&format!("org/{}", org.0)).await;
        self.check_quota(org).await?;
        let id = sandbox_id();
        let addrs = self
            .pool()?
            .allocate()
            .ok_or_else(|| PlaneError::NoAddresses)?;
        let row = NewSandbox {
            id: id.clone(),
            org_id: org.0.clone(),
            template_id: l.template.template.id.clone(),
            resources: Resources {
                vcpu: i64::from(l.vcpu),
                memory_mib: i64::from(l.memory_mib),
                disk_mib: i64::from(self.cfg.disk_mib),
            },
            state: SandboxState::Starting,
            auto_pause: l.auto_pause,
            timeout_secs: i64::from(l.timeout_secs),
            deadline_at: Some(now_ms() + i64::from(l.timeout_secs) * 1000),
            address: Some(addrs.sandbox.to_string()),
        };
        let rec = self.store.insert_sandbox(row, &l.env).await;
        drop(quota_guard);
        if let Err(e) = rec {
            self.pool()?.release(addrs);
            return Err(e.into());
        }
        // Before the data plane knows the sandbox, so its first held request has an owner.
        self.registry.approvals().set_owner(&id, &org.0);
        match self.bring_up(&id, addrs, &l).await {
            Ok(()) => {
                let rec = self.store.get_sandbox(&org.0, &id).await?;
                self.info(rec).await
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e.chain(), "sandbox creation failed; removing it");
                self.teardown(&id, Some(addrs)).await;
                let _ = self.store.delete_sandbox(&org.0, &id).await;
                Err(e)
            }
        }
    }

    async fn bring_up(
        &self,
        id: &str,
        addrs: palisade_netns::SandboxAddrs,
        l: &Launch,
    ) -> Result<()> {
        let (full, redacted) = policy_json(&l.policy)?;
        let version = self.store.add_policy_version(id, &full, &redacted).await?;
        // The user namespace first: the network namespace is made inside it.
        let userns = self.runtime.prepare_userns(id).await?;
        let net = self.net_create(id, addrs, userns).await?;
        self.apply_rules(rules(id, addrs, &l.policy, self.cfg.dns_limit))
            .await?;
        let owned = id.to_owned();
        let ca = tokio::task::spawn_blocking(move || SandboxCa::generate(&owned)).await??;
        self.store.put_ca(id, ca.cert_pem(), ca.key_pem()).await?;
        let cert = ca.cert_pem().to_owned();
        self.registry.upsert(
            id,
            addrs.sandbox,
            l.policy.compile(),
            u64::try_from(version).unwrap_or(0),
        );
        self.registry.set_ca(id, Arc::new(ca));
        let template = runtime_name(&l.template);
        let spec = SandboxSpec {
            id: id.to_owned(),
            template: if l.archive.is_some() {
                String::new()
            } else {
                template
            },
            vcpu: Some(f64::from(l.vcpu)),
            memory_mib: Some(u64::from(l.memory_mib)),
            env: l
                .env
                .0
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            netns_path: Some(net.netns_path.clone()),
            dns_server: Some(addrs.host),
            ca_pem: Some(cert),
            // ICMP can go out only to allow_cidrs; without any, no raw sockets at all.
            net_raw: !l.policy.allow_cidrs().is_empty(),
            ..SandboxSpec::default()
        };
        let created = match &l.archive {
            Some(archive) => self.runtime.restore(archive, spec).await,
            None => self.runtime.create(spec).await,
        };
        created?;
        self.store.mark_policy_applied(id, version).await?;
        self.store
            .set_sandbox_state(id, SandboxState::Running)
            .await?;
        Ok(())
    }

    /// Removes everything but the store row; idempotent, never fails (failures are logged).
    pub(super) async fn teardown(&self, id: &str, addrs: Option<palisade_netns::SandboxAddrs>) {
        self.registry.remove(id);
        match self.runtime.delete(id).await {
            Ok(()) | Err(palisade_runtime::RuntimeError::NotFound(_)) => {}
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "runtime delete failed"),
        }
        self.net_remove(id).await;
        if let (Some(a), Ok(mut pool)) = (addrs, self.pool()) {
            pool.release(a);
        }
    }

    pub(super) async fn info(&self, rec: SandboxRecord) -> Result<SandboxInfo> {
        let policy = match self.store.live_policy(&rec.sandbox.id).await {
            Ok(p) => Some(redacted_spec(&p.redacted)?),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(sandbox_info(&rec, policy))
    }

    pub async fn create_sandbox(&self, org: &OrgId, req: CreateSandbox) -> Result<SandboxInfo> {
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

    pub async fn get_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        self.info(rec).await
    }

    pub async fn list_sandboxes(&self, org: &OrgId, q: ListSandboxes) -> Result<Page<SandboxInfo>> {
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

    pub async fn delete_sandbox(&self, org: &OrgId, id: &str) -> Result<()> {
        let _guard = self.locks.lock(id).await;
        self.delete_locked(org, id).await
    }

    /// [`Plane::delete`] for a caller that holds the sandbox's lock.
    pub(super) async fn delete_locked(&self, org: &OrgId, id: &str) -> Result<()> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        self.store
            .set_sandbox_state(id, SandboxState::Deleting)
            .await?;
        self.teardown(id, stored_addrs(&rec)).await;
        self.store.delete_sandbox(&org.0, id).await?;
        self.locks.forget(id);
        Ok(())
    }

    /// Takes the sandbox's lock, then reads its row and checks it has what the change `needs`:
    /// the state a change is judged on cannot move before the change is made.
    pub(super) async fn lock_sandbox(
        &self,
        org: &OrgId,
        id: &str,
        needs: Needs,
    ) -> Result<(OwnedMutexGuard<()>, SandboxRecord)> {
        let guard = self.locks.lock(id).await;
        let rec = self.store.get_sandbox(&org.0, id).await?;
        let live = matches!(
            rec.sandbox.state,
            SandboxState::Running | SandboxState::Paused
        );
        if needs >= Needs::Live && !live {
            return Err(state_conflict(&rec));
        }
        if needs == Needs::Container && is_stopped(&rec) {
            return Err(stopped_conflict(id));
        }
        Ok((guard, rec))
    }

    pub async fn pause_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo> {
        let _guard = self.locks.lock(id).await;
        self.pause_locked(org, id).await
    }

    /// [`Plane::pause`] for a caller that holds the sandbox's lock.
    pub(super) async fn pause_locked(&self, org: &OrgId, id: &str) -> Result<SandboxInfo> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        if rec.sandbox.state == SandboxState::Running && !is_stopped(&rec) {
            self.runtime.pause(id).await?;
            self.store
                .set_sandbox_state(id, SandboxState::Paused)
                .await?;
        }
        let rec = self.store.get_sandbox(&org.0, id).await?;
        self.info(rec).await
    }

    /// Frees everything a sandbox holds (container, network, rules, registry entry, address)
    /// once its snapshot is stored, and keeps its row as `paused` with no address: a sandbox
    /// "paused into a snapshot", brought back with `/v1/snapshot/resume`. For a caller that
    /// holds the sandbox's lock.
    pub(super) async fn stop_locked(&self, org: &OrgId, id: &str) -> Result<()> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        self.teardown(id, stored_addrs(&rec)).await;
        self.store.set_sandbox_address(id, None).await?;
        self.store.set_sandbox_deadline(id, None).await?;
        self.store
            .set_sandbox_state(id, SandboxState::Paused)
            .await?;
        Ok(())
    }

    pub async fn execute(&self, org: &OrgId, id: &str, req: Execute) -> Result<ExecResult> {
        // Only the state check and the resume hold the lock: a command may run for hours and
        // must not hold up a delete. When the state last changed is kept, to tell a command
        // that failed because the state changed under it from a fault.
        let changed_at = {
            let (_guard, rec) = self.lock_sandbox(org, id, Needs::Container).await?;
            if rec.sandbox.state == SandboxState::Paused {
                self.runtime.resume(id).await?;
                self.store
                    .set_sandbox_state(id, SandboxState::Running)
                    .await?
            } else {
                rec.state_changed_at
            }
        };
        let res = self
            .runtime
            .exec(
                id,
                ExecRequest {
                    command: req.command,
                    cwd: req.cwd,
                    envs: req.env.0.into_iter().collect(),
                    timeout: req.timeout_secs.map(|s| Duration::from_secs(u64::from(s))),
                },
            )
            .await;
        let out = match res {
            Ok(out) => out,
            // Deleted or paused while the command ran: say so rather than a runc error.
            Err(e) => {
                let (_guard, rec) = self.lock_sandbox(org, id, Needs::Row).await?;
                if rec.sandbox.state != SandboxState::Running {
                    return Err(state_conflict(&rec));
                }
                // Paused, then resumed by another command, while this one ran.
                if rec.state_changed_at != changed_at {
                    return Err(PlaneError::Conflict(
                        "sandbox changed state while the command ran: run it again".to_owned(),
                    ));
                }
                // Its container exited on its own (OOM, init killed): a state, not a fault.
                if let Ok(sbx) = self.runtime.get(id).await
                    && !matches!(
                        sbx.state,
                        palisade_runtime::SandboxState::Running
                            | palisade_runtime::SandboxState::Paused
                    )
                {
                    return Err(PlaneError::Conflict(format!(
                        "sandbox container is {}",
                        sbx.state
                    )));
                }
                return Err(e.into());
            }
        };
        Ok(out)
    }

    /// Replaces the policy: stores the new version, swaps the kernel rules, then the data plane;
    /// marks it applied and returns only after both enforce it.
    pub async fn update_network_policy(
        &self,
        org: &OrgId,
        id: &str,
        policy: Policy,
    ) -> Result<PolicyInfo> {
        let (_guard, rec) = self.lock_sandbox(org, id, Needs::Live).await?;
        let addrs = stored_addrs(&rec).ok_or_else(|| state_conflict(&rec))?;
        let (full, redacted) = policy_json(&policy)?;
        let version = self.store.add_policy_version(id, &full, &redacted).await?;
        self.apply_rules(rules(id, addrs, &policy, self.cfg.dns_limit))
            .await?;
        let v = u64::try_from(version).unwrap_or(0);
        if !self.registry.update_policy(id, policy.compile(), v) {
            self.registry.upsert(id, addrs.sandbox, policy.compile(), v);
        }
        self.store.mark_policy_applied(id, version).await?;
        self.get_network_policy(org, id).await
    }

    pub async fn get_network_policy(&self, org: &OrgId, id: &str) -> Result<PolicyInfo> {
        let rec = self.store.get_sandbox(&org.0, id).await?;
        let live = self.store.live_policy(&rec.sandbox.id).await?;
        Ok(PolicyInfo {
            sandbox_id: rec.sandbox.id,
            version: live.version,
            network_policy: redacted_spec(&live.redacted)?,
        })
    }
}
