//! Daemon start: rebuild nftables and the firewall's registry from the store, so every
//! sandbox that was running comes back under the same policy version and CA, and reconcile
//! what changed while the daemon was down.

use std::sync::Arc;

use palisade_ca::SandboxCa;
use palisade_runtime::SandboxState as RtState;
use palisade_store::{SandboxRecord, SandboxState};

use super::convert::full_policy;
use super::net::{rules, stored_addrs};
use super::{Plane, Result};

/// What a recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sandboxes back under their policy.
    pub recovered: Vec<String>,
    /// Store rows whose sandbox was gone (or half-made) and were removed.
    pub dropped: Vec<String>,
    /// Runtime leftovers the store did not know, removed.
    pub orphans: Vec<String>,
    /// Sandboxes paused into a snapshot: nothing to bring back, the row stays.
    pub stopped: Vec<String>,
}

impl Plane {
    /// See the module doc. Run once, before the API serves.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let recs = self.store.sandboxes_to_recover().await?;
        let known: Vec<String> = recs.iter().map(|r| r.sandbox.id.clone()).collect();
        let rec_report = self.runtime.recover(&known).await?;
        report.orphans = rec_report.removed;
        report.orphans.extend(self.remove_orphan_archives().await?);
        let mut live = Vec::new();
        for rec in recs {
            if rec.sandbox.state == SandboxState::Paused && super::sandboxes::is_stopped(&rec) {
                report.stopped.push(rec.sandbox.id);
                continue;
            }
            // runc must still have the container alive: a record whose init died (OOM, a
            // kill, a host reboot) is a sandbox that no longer exists.
            let rt_state = self
                .runtime
                .get(&rec.sandbox.id)
                .await
                .ok()
                .map(|s| s.state);
            let alive = matches!(rt_state, Some(RtState::Running | RtState::Paused));
            let usable = alive
                && matches!(
                    rec.sandbox.state,
                    SandboxState::Running | SandboxState::Paused
                );
            // A daemon killed mid-snapshot leaves the container frozen while the store says
            // running (an exec would hang in the freezer); runc's word wins, and the next exec
            // thaws it.
            if usable {
                let actual = match rt_state {
                    Some(RtState::Paused) => SandboxState::Paused,
                    _ => SandboxState::Running,
                };
                if actual != rec.sandbox.state {
                    tracing::warn!(sandbox = %rec.sandbox.id, stored = %rec.sandbox.state, actual = %actual, "state changed while down");
                    self.store
                        .set_sandbox_state(&rec.sandbox.id, actual)
                        .await?;
                }
            }
            match (usable, stored_addrs(&rec)) {
                (true, Some(addrs)) => live.push((rec, addrs)),
                _ => {
                    tracing::warn!(sandbox = %rec.sandbox.id, state = %rec.sandbox.state, "sandbox lost while down; removing");
                    self.teardown(&rec.sandbox.id, None).await;
                    let _ = self
                        .store
                        .delete_sandbox(&rec.sandbox.org_id, &rec.sandbox.id)
                        .await;
                    report.dropped.push(rec.sandbox.id);
                }
            }
        }
        // Rules first, all at once: from here on, every live sandbox is enforced by the kernel
        // (redirected to a proxy that may not know it yet, which denies).
        let mut all_rules = Vec::new();
        let mut policies = Vec::new();
        for (rec, addrs) in &live {
            let p = self.store.live_policy(&rec.sandbox.id).await?;
            let policy = full_policy(p.full.expose())?;
            all_rules.push(rules(&rec.sandbox.id, *addrs, &policy, self.cfg.dns_limit));
            policies.push((p.version, policy));
        }
        self.apply_full(all_rules).await?;
        for ((rec, addrs), (version, policy)) in live.iter().zip(policies) {
            self.restore_entry(rec, *addrs, version, &policy).await?;
            report.recovered.push(rec.sandbox.id.clone());
        }
        // Each restored sandbox found its synthetic addresses in its journal (the registry
        // replays it on registration), so addresses its resolver cached before the crash still
        // lead to the same names. Journals of sandboxes that are gone go.
        let ids: Vec<&str> = report.recovered.iter().map(String::as_str).collect();
        for id in self.registry.remove_stale_synthetic(&ids) {
            tracing::info!(sandbox = %id, "synthetic address journal of a gone sandbox removed");
        }
        Ok(report)
    }

    /// Removes files in the snapshot directory that no snapshot row names: archives a crash
    /// interrupted before their row was written.
    async fn remove_orphan_archives(&self) -> Result<Vec<String>> {
        let known: std::collections::HashSet<std::path::PathBuf> = self
            .store
            .snapshot_archive_paths()
            .await?
            .into_iter()
            .map(std::path::PathBuf::from)
            .collect();
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.snapshot_dir()) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && !known.contains(&path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(path.display().to_string()),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "orphan archive not removed")
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn restore_entry(
        &self,
        rec: &SandboxRecord,
        addrs: palisade_netns::SandboxAddrs,
        version: i64,
        policy: &palisade_policy::Policy,
    ) -> Result<()> {
        if let Err(e) = self.pool()?.reserve(addrs) {
            tracing::warn!(sandbox = %rec.sandbox.id, error = %e, "address already reserved");
        }
        self.registry
            .approvals()
            .set_owner(&rec.sandbox.id, &rec.sandbox.org_id);
        self.registry.upsert(
            &rec.sandbox.id,
            addrs.sandbox,
            policy.compile(),
            u64::try_from(version).unwrap_or(0),
        );
        let ca = self.store.get_ca(&rec.sandbox.id).await?;
        let ca = SandboxCa::from_pem(&ca.cert_pem, ca.key_pem.expose())?;
        self.registry.set_ca(&rec.sandbox.id, Arc::new(ca));
        Ok(())
    }
}
