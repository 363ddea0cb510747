//! The real [`Plane`] over recording platforms, for tests without root: a store in a
//! directory the caller owns, [`RecordingRuntime`] for runc, [`RecordingNetPlatform`] for `ip`
//! and `nft`, and the firewall's real registry and event log. Tests drive it through the API
//! (or its methods) and assert on what it did to each platform.

use std::path::Path;
use std::sync::Arc;

use palisade_firewall::{EventLog, Registry};
use palisade_netns::RecordingNetPlatform;
use palisade_netns::nft::FirewallPorts;
use palisade_policy::NetworkPolicySpec;
use palisade_runtime::RecordingRuntime;
use palisade_store::{EventWriter, EventWriterConfig, Store};

use crate::plane::{Plane, PlaneConfig, PlaneError, PlaneParts};

/// A [`Plane`] and the fakes under it.
#[derive(Debug)]
pub struct TestPlane {
    pub plane: Arc<Plane>,
    pub runtime: Arc<RecordingRuntime>,
    pub net: Arc<RecordingNetPlatform>,
    pub registry: Arc<Registry>,
    pub events: Arc<EventLog>,
}

impl TestPlane {
    /// A plane keeping its store and snapshots under `dir`.
    pub async fn new(dir: &Path) -> Result<Self, PlaneError> {
        Self::with_net(dir, RecordingNetPlatform::new()).await
    }

    /// [`TestPlane::new`] over a given network platform (one told to fail, say).
    pub async fn with_net(dir: &Path, net: RecordingNetPlatform) -> Result<Self, PlaneError> {
        let store = Store::open(dir).await?;
        let runtime = Arc::new(RecordingRuntime::new());
        let net = Arc::new(net);
        let events = Arc::new(EventLog::new(1024));
        let registry = Arc::new(Registry::new(Arc::clone(&events)));
        let (sink, _writer) = EventWriter::spawn(store.clone(), EventWriterConfig::default());
        let plane = Plane::new(
            PlaneParts {
                store,
                runtime: runtime.clone(),
                net: net.clone(),
                registry: Arc::clone(&registry),
                events: Arc::clone(&events),
                sink,
            },
            PlaneConfig {
                data_dir: dir.to_owned(),
                host_netns: None,
                ports: FirewallPorts {
                    proxy: 15001,
                    dns: 15053,
                },
                pool: palisade_netns::DEFAULT_POOL,
                default_quota: None,
                disk_mib: 10_240,
                dns_limit: None,
            },
        )
        .await?;
        Ok(Self {
            plane,
            runtime,
            net,
            registry,
            events,
        })
    }

    /// A new organisation named `org` (quota `max`) and an API key of it.
    pub async fn add_org(&self, org: &str, max: Option<i64>) -> Result<String, PlaneError> {
        let store = self.plane.store();
        let o = store.create_org(org, max).await?;
        let (_, key) = store.create_api_key(&o.id, "test").await?;
        Ok(key.expose().to_owned())
    }

    /// Sets the quota of the organisation named `org`.
    pub async fn set_quota(&self, org: &str, max: i64) -> Result<(), PlaneError> {
        let store = self.plane.store();
        let o = store.get_org_by_name(org).await?;
        Ok(store.set_org_quota(&o.id, Some(max)).await?)
    }

    /// The full (unredacted) live policy of a sandbox, as the data plane is given it.
    pub async fn full_policy(&self, sandbox_id: &str) -> Result<NetworkPolicySpec, PlaneError> {
        let live = self.plane.store().live_policy(sandbox_id).await?;
        serde_json::from_str(live.full.expose()).map_err(|e| PlaneError::CorruptPolicy(Box::new(e)))
    }
}
