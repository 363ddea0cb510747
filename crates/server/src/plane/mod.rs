//! The real [`ControlPlane`](crate::ControlPlane): the store keeps what should exist, the
//! runtime runs sandboxes, `palisade-netns` wires their network and nftables, and the firewall's
//! registry enforces their policies. Every change goes store → kernel → data plane, and a policy
//! version is marked applied only once the data plane enforces it.

mod approvals;
mod builds;
mod convert;
mod events;
mod imp;
mod locks;
mod net;
mod recover;
mod sandboxes;
mod snapshots;
mod sweeper;
mod templates;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use palisade_firewall::{EventLog, Registry};
use palisade_netns::AddressPool;
use palisade_netns::nft::FirewallPorts;
use palisade_runtime::SandboxRuntime;
use palisade_store::{EventSink, Store};

use crate::error::ApiError;

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
    pub registry: Arc<Registry>,
    pub events: Arc<EventLog>,
    pub sink: EventSink,
}

impl Plane {
    /// A plane over `parts`; seeds the system templates into the store and starts copying
    /// egress events from the ring into the store.
    pub async fn new(parts: PlaneParts, cfg: PlaneConfig) -> Result<Arc<Self>, ApiError> {
        let pool = AddressPool::new(cfg.pool).map_err(ApiError::internal)?;
        let plane = Arc::new(Self {
            store: parts.store,
            runtime: parts.runtime,
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("snapshots")
    }

    fn pool(&self) -> Result<std::sync::MutexGuard<'_, AddressPool>, ApiError> {
        self.pool
            .lock()
            .map_err(|_| ApiError::internal("address pool lock poisoned"))
    }
}
