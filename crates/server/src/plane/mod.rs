//! The control plane: the store keeps what should exist, the
//! runtime runs sandboxes, `palisade-netns` wires their network and nftables, and the firewall's
//! registry enforces their policies. Every change goes store → kernel → data plane, and a policy
//! version is marked applied only once the data plane enforces it.
//!
//! The platforms the plane drives come in through [`PlaneParts`] as traits: the runtime
//! ([`SandboxRuntime`]) and the host's `ip`/`nft`/`sysctl` ([`NetPlatform`]). The daemon passes
//! runc and the real commands; unit and API tests pass recording fakes and run the same plane
//! without root ([`crate::testing`]). The store, the CA and the firewall's registry are pure
//! code and always real.

mod approvals;
mod builds;
mod convert;
mod error;
mod events;
mod locks;
mod net;
mod recover;
mod sandboxes;
mod snapshots;
mod suggest;
mod sweeper;
mod templates;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use palisade_firewall::{EventLog, Registry};
use palisade_netns::AddressPool;
pub use palisade_netns::NetPlatform;
use palisade_netns::nft::FirewallPorts;
use palisade_runtime::SandboxRuntime;
use palisade_store::{EventSink, Store};

use crate::control::OrgId;

pub use error::{Chain, PlaneError, Result};
pub use recover::RecoveryReport;
pub use sweeper::{auto_pause_name, spawn_sweeper};

/// How the control plane is wired on this host.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Where snapshot archives are kept (`<data_dir>/snapshots`).
    pub data_dir: PathBuf,
    /// The namespace the firewall and the sandboxes' host sides live in (`None`: our own).
    pub host_netns: Option<String>,
    /// Where the firewall listens (the nftables redirect targets).
    pub ports: FirewallPorts,
    /// Sandbox addresses.
    pub pool: Ipv4Net,
    /// Most sandboxes alive at once per organisation when the organisation names no quota.
    pub default_quota: Option<i64>,
    /// Disk size reported for sandboxes (the overlay is not size-limited yet).
    pub disk_mib: u32,
    /// The kernel's ceiling on each sandbox's DNS queries (see `DnsPacketLimit`); `None`: none.
    pub dns_limit: Option<palisade_netns::nft::DnsPacketLimit>,
}

/// See the module doc.
pub struct Plane {
    store: Store,
    runtime: Arc<dyn SandboxRuntime>,
    net: Arc<dyn NetPlatform>,
    registry: Arc<Registry>,
    events: Arc<EventLog>,
    sink: EventSink,
    pool: Mutex<AddressPool>,
    locks: locks::SandboxLocks,
    builds: builds::Builds,
    cfg: PlaneConfig,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane")
            .field("data_dir", &self.cfg.data_dir)
            .field("sandboxes", &self.registry.len())
            .finish_non_exhaustive()
    }
}

/// Everything the plane drives, made by the caller (the daemon, or a test).
#[derive(Debug)]
pub struct PlaneParts {
    pub store: Store,
    pub runtime: Arc<dyn SandboxRuntime>,
    /// Runs `ip`, `nft` and `sysctl` for sandbox networks (`palisade_netns::HostNetPlatform`).
    pub net: Arc<dyn NetPlatform>,
    pub registry: Arc<Registry>,
    pub events: Arc<EventLog>,
    pub sink: EventSink,
}

impl Plane {
    /// A plane over `parts`; seeds the system templates into the store and starts copying
    /// egress events from the ring into the store.
    pub async fn new(parts: PlaneParts, cfg: PlaneConfig) -> Result<Arc<Self>> {
        let pool = AddressPool::new(cfg.pool)?;
        let plane = Arc::new(Self {
            store: parts.store,
            runtime: parts.runtime,
            net: parts.net,
            registry: parts.registry,
            events: parts.events,
            sink: parts.sink,
            pool: Mutex::new(pool),
            locks: locks::SandboxLocks::default(),
            builds: builds::Builds::default(),
            cfg,
        });
        plane.seed_system_templates().await?;
        events::spawn_pump(Arc::clone(&plane.events), plane.sink.clone());
        Ok(plane)
    }

    /// The organisation of a presented API key; `None` when unknown or revoked.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<OrgId>> {
        Ok(self
            .store
            .authenticate(api_key)
            .await?
            .map(|k| OrgId(k.org_id)))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("snapshots")
    }

    fn pool(&self) -> Result<std::sync::MutexGuard<'_, AddressPool>> {
        self.pool
            .lock()
            .map_err(|_| PlaneError::Poisoned("address pool"))
    }
}
