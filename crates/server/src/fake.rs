//! A recording, in-memory [`ControlPlane`] for API tests and SDK compatibility checks: it keeps
//! sandboxes, snapshots and templates per organisation, answers like the real one (404 across
//! organisations, 409 on names, 429 over quota) and records every typed call it receives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream};
use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_store::{EgressEventRecord, Order, SandboxSort, SandboxState, SnapshotSort};

use crate::control::*;
use crate::plane::PlaneError;

/// A call as the control plane received it.
#[derive(Debug, Clone)]
pub enum Call {
    CreateSandbox(OrgId, CreateSandbox),
    GetSandbox(OrgId, String),
    ListSandboxes(OrgId, ListSandboxes),
    DeleteSandbox(OrgId, String),
    PauseSandbox(OrgId, String),
    Execute(OrgId, String, Execute),
    CreateSnapshot(OrgId, String, CreateSnapshot),
    ListSnapshots(OrgId, ListSnapshots),
    DeleteSnapshot(OrgId, String),
    RestoreSnapshot(OrgId, RestoreSnapshot),
    CreateTemplate(OrgId, CreateTemplate),
    ListTemplates(OrgId),
    RenameTemplate(OrgId, String, String),
    DeleteTemplate(OrgId, String),
    BuildTemplate(OrgId, String),
    UpdatePolicy(OrgId, String, Policy),
    GetPolicy(OrgId, String),
    ListEvents(OrgId, String, EventFilter),
    SubscribeEvents(OrgId, String, EventFilter),
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, OrgId>,
    quota: HashMap<OrgId, usize>,
    sandboxes: BTreeMap<String, (OrgId, SandboxInfo, Policy)>,
    snapshots: BTreeMap<String, (OrgId, SnapshotInfo, Policy)>,
    templates: BTreeMap<String, (Option<OrgId>, TemplateInfo)>,
    events: Vec<EgressEventRecord>,
    calls: Vec<Call>,
    clock: i64,
    next: u64,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct FakeControlPlane {
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> Result<std::sync::MutexGuard<'_, State>, PlaneError> {
    m.lock()
        .map_err(|_| PlaneError::Poisoned("fake control plane"))
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{:04}", self.next)
    }
    fn tick(&mut self) -> i64 {
        self.clock += 1000;
        1_700_000_000_000 + self.clock
    }
    fn sandbox(&self, org: &OrgId, id: &str) -> Result<&(OrgId, SandboxInfo, Policy), PlaneError> {
        self.sandboxes
            .get(id)
            .filter(|(o, ..)| o == org)
            .ok_or(PlaneError::NotFound("sandbox"))
    }
    fn new_sandbox(
        &mut self,
        org: &OrgId,
        template_id: String,
        (vcpu, memory_mib): (u32, u32),
        timeout_secs: u32,
        auto_pause: bool,
        policy: Policy,
    ) -> Result<SandboxInfo, PlaneError> {
        let active = self.sandboxes.values().filter(|(o, ..)| o == org).count();
        if self.quota.get(org).is_some_and(|max| active >= *max) {
            return Err(PlaneError::Quota(
                "sandbox quota reached for this organisation".into(),
            ));
        }
        let now = self.tick();
        let info = SandboxInfo {
            id: self.id("sb"),
            template_id,
            vcpu,
            memory_mib,
            disk_mib: 10_240,
            timeout_secs,
            state: SandboxState::Running,
            auto_pause,
            created_at_ms: now,
            state_changed_at_ms: now,
            deadline_at_ms: Some(now + i64::from(timeout_secs) * 1000),
            network_policy: Some(policy.redacted_spec()),
            policy_version: 1,
        };
        self.sandboxes
            .insert(info.id.clone(), (org.clone(), info.clone(), policy));
        Ok(info)
    }
}

impl FakeControlPlane {
    /// A fake with the system template `system/debian:bookworm`.
    pub fn new() -> Self {
        let fake = Self::default();
        if let Ok(mut s) = fake.state.lock() {
            s.templates.insert(
                "tpl-system".into(),
                (
                    None,
                    TemplateInfo {
                        id: "tpl-system".into(),
                        name: crate::model::DEFAULT_TEMPLATE.into(),
                        digest: String::new(),
                        image_config: None,
                        is_system: true,
                        created_at_ms: 1_700_000_000_000,
                        build: crate::control::BuildStatus::default(),
                    },
                ),
            );
        }
        fake
    }

    /// Accept `key` as a key of `org`.
    pub fn add_key(&self, key: &str, org: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.keys.insert(key.to_owned(), OrgId(org.to_owned()));
        }
    }

    /// At most `max` sandboxes alive for `org`.
    pub fn set_quota(&self, org: &str, max: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.quota.insert(OrgId(org.to_owned()), max);
        }
    }

    /// Add a stored egress event.
    pub fn push_event(&self, event: EgressEventRecord) {
        if let Ok(mut s) = self.state.lock() {
            s.events.push(event);
        }
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// The full (unredacted) policy a sandbox was given, as the data plane would see it.
    pub fn full_policy(&self, sandbox_id: &str) -> Option<NetworkPolicySpec> {
        let s = self.state.lock().ok()?;
        s.sandboxes.get(sandbox_id).map(|(_, _, p)| p.to_spec())
    }

    fn record(&self, call: Call) -> Result<std::sync::MutexGuard<'_, State>, PlaneError> {
        let mut s = lock(&self.state)?;
        s.calls.push(call);
        Ok(s)
    }
}

fn page<T: Clone>(mut items: Vec<T>, page: u32, size: u32) -> Page<T> {
    let total = items.len() as i64;
    let size = size.clamp(1, 100) as usize;
    let start = (page.max(1) as usize - 1).saturating_mul(size);
    let items = if start >= items.len() {
        Vec::new()
    } else {
        items.drain(start..).take(size).collect()
    };
    Page { items, total }
}

#[async_trait]
impl ControlPlane for FakeControlPlane {
    async fn authenticate(&self, api_key: &str) -> Result<Option<OrgId>, PlaneError> {
        Ok(lock(&self.state)?.keys.get(api_key).cloned())
    }

    async fn create_sandbox(
        &self,
        org: &OrgId,
        req: CreateSandbox,
    ) -> Result<SandboxInfo, PlaneError> {
        let mut s = self.record(Call::CreateSandbox(org.clone(), req.clone()))?;
        let template = s
            .templates
            .values()
            .find(|(o, t)| t.name == req.template_name && (o.is_none() || o.as_ref() == Some(org)))
            .map(|(_, t)| t.id.clone())
            .ok_or_else(|| PlaneError::invalid("template_name", "no such template"))?;
        let policy = req.network_policy.unwrap_or_default();
        s.new_sandbox(
            org,
            template,
            (req.vcpu, req.memory_mib),
            req.timeout_secs,
            req.auto_pause,
            policy,
        )
    }

    async fn get_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo, PlaneError> {
        let s = self.record(Call::GetSandbox(org.clone(), id.to_owned()))?;
        Ok(s.sandbox(org, id)?.1.clone())
    }

    async fn list_sandboxes(
        &self,
        org: &OrgId,
        q: ListSandboxes,
    ) -> Result<Page<SandboxInfo>, PlaneError> {
        let s = self.record(Call::ListSandboxes(org.clone(), q.clone()))?;
        let mut items: Vec<SandboxInfo> = s
            .sandboxes
            .values()
            .filter(|(o, i, _)| o == org && q.state.is_none_or(|st| i.state == st))
            .map(|(_, i, _)| i.clone())
            .collect();
        match q.sort {
            SandboxSort::CreatedAt => items.sort_by_key(|i| i.created_at_ms),
            SandboxSort::State => items.sort_by_key(|i| (i.state.as_str(), i.created_at_ms)),
        }
        if q.order == Order::Desc {
            items.reverse();
        }
        Ok(page(items, q.page, q.page_size))
    }

    async fn delete_sandbox(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        let mut s = self.record(Call::DeleteSandbox(org.clone(), id.to_owned()))?;
        s.sandbox(org, id)?;
        s.sandboxes.remove(id);
        Ok(())
    }

    async fn pause_sandbox(&self, org: &OrgId, id: &str) -> Result<SandboxInfo, PlaneError> {
        let mut s = self.record(Call::PauseSandbox(org.clone(), id.to_owned()))?;
        s.sandbox(org, id)?;
        let now = s.tick();
        let entry = s
            .sandboxes
            .get_mut(id)
            .ok_or(PlaneError::NotFound("sandbox"))?;
        if entry.1.state != SandboxState::Running {
            return Err(PlaneError::Conflict("sandbox is not running".into()));
        }
        entry.1.state = SandboxState::Paused;
        entry.1.state_changed_at_ms = now;
        Ok(entry.1.clone())
    }

    async fn execute(&self, org: &OrgId, id: &str, req: Execute) -> Result<ExecResult, PlaneError> {
        let s = self.record(Call::Execute(org.clone(), id.to_owned(), req.clone()))?;
        s.sandbox(org, id)?;
        let stdout = req
            .command
            .strip_prefix("echo ")
            .map(|t| format!("{t}\n"))
            .unwrap_or_default();
        Ok(ExecResult {
            exit_code: 0,
            stdout,
            stderr: String::new(),
            truncated: false,
            timed_out: false,
        })
    }

    async fn create_snapshot(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        req: CreateSnapshot,
    ) -> Result<SnapshotInfo, PlaneError> {
        let mut s = self.record(Call::CreateSnapshot(
            org.clone(),
            sandbox_id.to_owned(),
            req.clone(),
        ))?;
        let (_, sb, policy) = s.sandbox(org, sandbox_id)?.clone();
        let id = s.id("snap");
        let name = req.name.unwrap_or_else(|| format!("snapshot-{id}"));
        if s.snapshots
            .values()
            .any(|(o, i, _)| o == org && i.name == name)
        {
            return Err(PlaneError::Conflict(format!(
                "a snapshot named {name} already exists"
            )));
        }
        let now = s.tick();
        let info = SnapshotInfo {
            id: id.clone(),
            name,
            sandbox_id: Some(sb.id.clone()),
            template_id: sb.template_id.clone(),
            vcpu: sb.vcpu,
            memory_mib: sb.memory_mib,
            disk_mib: sb.disk_mib,
            state: "ready".into(),
            network_policy: Some(policy.redacted_spec()),
            created_at_ms: now,
        };
        s.snapshots.insert(id, (org.clone(), info.clone(), policy));
        match req.after {
            AfterSnapshot::KeepRunning => {}
            AfterSnapshot::Stop => {
                if let Some(e) = s.sandboxes.get_mut(sandbox_id) {
                    e.1.state = SandboxState::Paused;
                }
            }
            AfterSnapshot::Delete => {
                s.sandboxes.remove(sandbox_id);
            }
        }
        Ok(info)
    }

    async fn list_snapshots(
        &self,
        org: &OrgId,
        q: ListSnapshots,
    ) -> Result<Page<SnapshotInfo>, PlaneError> {
        let s = self.record(Call::ListSnapshots(org.clone(), q.clone()))?;
        let mut items: Vec<SnapshotInfo> = s
            .snapshots
            .values()
            .filter(|(o, i, _)| o == org && i.name.contains(&q.query))
            .map(|(_, i, _)| i.clone())
            .collect();
        match q.sort {
            SnapshotSort::CreatedAt => items.sort_by_key(|i| i.created_at_ms),
            SnapshotSort::TemplateId => items.sort_by(|a, b| a.template_id.cmp(&b.template_id)),
        }
        if q.order == Order::Desc {
            items.reverse();
        }
        Ok(page(items, q.page, q.page_size))
    }

    async fn delete_snapshot(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        let mut s = self.record(Call::DeleteSnapshot(org.clone(), id.to_owned()))?;
        match s.snapshots.get(id) {
            Some((o, ..)) if o == org => {
                s.snapshots.remove(id);
                Ok(())
            }
            _ => Err(PlaneError::NotFound("snapshot")),
        }
    }

    async fn restore_snapshot(
        &self,
        org: &OrgId,
        req: RestoreSnapshot,
    ) -> Result<SandboxInfo, PlaneError> {
        let mut s = self.record(Call::RestoreSnapshot(org.clone(), req.clone()))?;
        let (_, snap, policy) = s
            .snapshots
            .values()
            .find(|(o, i, _)| o == org && (i.name == req.snapshot || i.id == req.snapshot))
            .cloned()
            .ok_or(PlaneError::NotFound("snapshot"))?;
        let policy = req.network_policy.unwrap_or(policy);
        s.new_sandbox(
            org,
            snap.template_id,
            (snap.vcpu, snap.memory_mib),
            req.timeout_secs.unwrap_or(300),
            req.auto_pause,
            policy,
        )
    }

    async fn create_template(
        &self,
        org: &OrgId,
        req: CreateTemplate,
    ) -> Result<TemplateInfo, PlaneError> {
        let mut s = self.record(Call::CreateTemplate(org.clone(), req.clone()))?;
        if s.templates
            .values()
            .any(|(o, t)| o.as_ref() == Some(org) && t.name == req.name)
        {
            return Err(PlaneError::Conflict(format!(
                "a template named {} already exists",
                req.name
            )));
        }
        if !req.uri.starts_with("host") && !req.uri.starts_with("debian") {
            return Err(PlaneError::invalid("uri", "unsupported template source"));
        }
        let id = s.id("tpl");
        let now = s.tick();
        let info = TemplateInfo {
            id: id.clone(),
            name: req.name,
            digest: "sha256:00".into(),
            image_config: None,
            is_system: false,
            created_at_ms: now,
            build: crate::control::BuildStatus::default(),
        };
        s.templates.insert(id, (Some(org.clone()), info.clone()));
        Ok(info)
    }

    async fn list_templates(&self, org: &OrgId) -> Result<Vec<TemplateInfo>, PlaneError> {
        let s = self.record(Call::ListTemplates(org.clone()))?;
        Ok(s.templates
            .values()
            .filter(|(o, _)| o.is_none() || o.as_ref() == Some(org))
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn rename_template(&self, org: &OrgId, id: &str, name: String) -> Result<(), PlaneError> {
        let mut s = self.record(Call::RenameTemplate(
            org.clone(),
            id.to_owned(),
            name.clone(),
        ))?;
        if s.templates
            .values()
            .any(|(o, t)| o.as_ref() == Some(org) && t.name == name && t.id != id)
        {
            return Err(PlaneError::Conflict(format!(
                "a template named {name} already exists"
            )));
        }
        match s.templates.get_mut(id) {
            Some((Some(o), t)) if o == org => {
                t.name = name;
                Ok(())
            }
            _ => Err(PlaneError::NotFound("template")),
        }
    }

    async fn delete_template(&self, org: &OrgId, id: &str) -> Result<(), PlaneError> {
        let mut s = self.record(Call::DeleteTemplate(org.clone(), id.to_owned()))?;
        match s.templates.get(id) {
            Some((Some(o), _)) if o == org => {
                s.templates.remove(id);
                Ok(())
            }
            _ => Err(PlaneError::NotFound("template")),
        }
    }

    async fn build_template(&self, org: &OrgId, id: &str) -> Result<TemplateInfo, PlaneError> {
        let s = self.record(Call::BuildTemplate(org.clone(), id.to_owned()))?;
        match s.templates.get(id) {
            Some((None, t)) => Ok(t.clone()),
            Some((Some(o), t)) if o == org => Ok(t.clone()),
            _ => Err(PlaneError::NotFound("template")),
        }
    }

    async fn update_network_policy(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        policy: Policy,
    ) -> Result<PolicyInfo, PlaneError> {
        let mut s = self.record(Call::UpdatePolicy(
            org.clone(),
            sandbox_id.to_owned(),
            policy.clone(),
        ))?;
        s.sandbox(org, sandbox_id)?;
        let entry = s
            .sandboxes
            .get_mut(sandbox_id)
            .ok_or(PlaneError::NotFound("sandbox"))?;
        entry.1.policy_version += 1;
        entry.1.network_policy = Some(policy.redacted_spec());
        entry.2 = policy;
        Ok(PolicyInfo {
            sandbox_id: sandbox_id.to_owned(),
            version: entry.1.policy_version,
            network_policy: entry.2.redacted_spec(),
        })
    }

    async fn get_network_policy(
        &self,
        org: &OrgId,
        sandbox_id: &str,
    ) -> Result<PolicyInfo, PlaneError> {
        let s = self.record(Call::GetPolicy(org.clone(), sandbox_id.to_owned()))?;
        let (_, info, policy) = s.sandbox(org, sandbox_id)?;
        Ok(PolicyInfo {
            sandbox_id: sandbox_id.to_owned(),
            version: info.policy_version,
            network_policy: policy.redacted_spec(),
        })
    }

    async fn list_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        filter: EventFilter,
    ) -> Result<Vec<EgressEventRecord>, PlaneError> {
        let s = self.record(Call::ListEvents(
            org.clone(),
            sandbox_id.to_owned(),
            filter.clone(),
        ))?;
        s.sandbox(org, sandbox_id)?;
        Ok(s.events
            .iter()
            .filter(|e| e.sandbox_id == sandbox_id && matches(e, &filter))
            .cloned()
            .collect())
    }

    async fn subscribe_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        filter: EventFilter,
    ) -> Result<BoxStream<'static, EgressEventRecord>, PlaneError> {
        let s = self.record(Call::SubscribeEvents(
            org.clone(),
            sandbox_id.to_owned(),
            filter.clone(),
        ))?;
        s.sandbox(org, sandbox_id)?;
        let events: Vec<_> = s
            .events
            .iter()
            .filter(|e| e.sandbox_id == sandbox_id && matches(e, &filter))
            .cloned()
            .collect();
        Ok(Box::pin(stream::iter(events)))
    }
}

fn matches(e: &EgressEventRecord, f: &EventFilter) -> bool {
    f.verdict.as_ref().is_none_or(|v| *v == e.verdict)
        && f.name.as_ref().is_none_or(|n| Some(n) == e.name.as_ref())
        && f.after_id.is_none_or(|a| e.id > a)
        && f.before_id.is_none_or(|b| e.id < b)
        && f.since_ms.is_none_or(|t| e.at_ms >= t)
        && f.until_ms.is_none_or(|t| e.at_ms < t)
}
