//! `palisade serve`: open the store, start the data plane, put back every sandbox that was
//! running (nftables, registry, CA), then serve the API and the admin listener.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_firewall::Firewall;
use palisade_netns::nft::FirewallPorts;
use palisade_runtime::{Runtime, RuntimeConfig};
use palisade_server::plane::{Plane, PlaneConfig, PlaneParts, spawn_sweeper};
use palisade_server::{Metrics, admin_router, api_router};
use palisade_store::{EventWriter, EventWriterConfig, Store};

use crate::config::Config;

pub(crate) async fn run(mut config: Config, prepare: Option<String>) -> anyhow::Result<()> {
    config.fill_resolvers()?;
    let data_dir = config.server.data_dir.clone();
    let mut runtime_cfg = RuntimeConfig::new(data_dir.join("runtime"));
    runtime_cfg.userns = Some(palisade_runtime::UsernsConfig {
        first_host_id: config.server.sandbox_first_host_id,
        slots: config.server.sandbox_id_ranges,
    });
    runtime_cfg.debian_mirror = config.server.debian_mirror.clone();
    // Before anything is touched: a daemon in the wrong place must change nothing.
    crate::preflight::check(&runtime_cfg.runc)?;
    let _claim = crate::preflight::claim_data_dir(&data_dir)?;
    let store = Store::open(&data_dir).await.map_err(|e| {
        let what = e
            .storage_fault()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        anyhow::anyhow!(e).context(format!("opening the store in {}{what}", data_dir.display()))
    })?;
    // Synthetic-address mappings live beside the store, so a restart finds them.
    config
        .firewall
        .synthetic
        .state_dir
        .get_or_insert_with(|| data_dir.join("synthetic"));
    let firewall = Firewall::start(&config.firewall)
        .await
        .context("starting the firewall")?;
    let runtime = Arc::new(Runtime::new(runtime_cfg).context("runtime")?);
    let (sink, _writer) = EventWriter::spawn(store.clone(), EventWriterConfig::default());
    let ports = FirewallPorts {
        proxy: firewall.proxy_addr().port(),
        dns: firewall.dns_udp_addr().port(),
    };
    let plane = Plane::new(
        PlaneParts {
            store,
            runtime,
            net: Arc::new(palisade_netns::HostNetPlatform),
            registry: Arc::clone(firewall.registry()),
            events: Arc::clone(firewall.events()),
            sink,
        },
        PlaneConfig {
            data_dir: data_dir.clone(),
            host_netns: None,
            ports,
            pool: config.firewall.address_pool,
            default_quota: config.server.default_quota,
            disk_mib: 10_240,
            dns_limit: dns_packet_limit(&config.firewall.dns),
        },
    )
    .await
    .context("control plane")?;
    let report = plane.recover().await.context("recovery")?;
    tracing::info!(
        recovered = report.recovered.len(),
        dropped = report.dropped.len(),
        orphans = report.orphans.len(),
        "sandboxes recovered"
    );
    let _sweeper = spawn_sweeper(
        Arc::clone(&plane),
        Duration::from_secs(config.server.sweep_interval_s.max(1)),
    );
    if let Some(name) = prepare {
        prepare_template(&plane, &name).await;
    }
    let metrics = Arc::new(Metrics::default());
    metrics.count_egress_events(firewall.events());
    let api = api_router(plane, Arc::clone(&metrics));
    let admin = admin_router(metrics);
    let api_l = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let admin_l = tokio::net::TcpListener::bind(config.server.admin)
        .await
        .with_context(|| format!("listening on {}", config.server.admin))?;
    tracing::info!(api = %config.server.listen, admin = %config.server.admin, "palisade serving");
    // Announced on stdout so wrappers (make run, tests) know the API is up.
    println!("palisade: serving on http://{}", api_l.local_addr()?);
    let admin_task = tokio::spawn(async move { axum::serve(admin_l, admin).await });
    tokio::select! {
        r = axum::serve(api_l, api).into_future() => r.context("API server")?,
        r = admin_task => r.context("admin task")?.context("admin server")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping (sandboxes and rules stay)"),
    }
    drop(firewall);
    Ok(())
}

/// The kernel's ceiling on a sandbox's DNS queries: twice the resolver's own rate and burst, so
/// the resolver still sees (and reports) a flood while the kernel keeps its receive queue from
/// filling; none when the resolver's limit is off.
fn dns_packet_limit(
    dns: &palisade_firewall::DnsLimits,
) -> Option<palisade_netns::nft::DnsPacketLimit> {
    (dns.queries_per_second_per_source > 0).then(|| palisade_netns::nft::DnsPacketLimit {
        per_second: dns.queries_per_second_per_source.saturating_mul(2),
        burst: dns.query_burst_per_source.max(1).saturating_mul(2),
    })
}

/// Builds `name` before serving, with a progress bar; a failure is said and serving goes on
/// (creates on it then answer 503 with the cause; `palisade template build` retries).
async fn prepare_template(plane: &Plane, name: &str) {
    let pb = crate::template_cmd::bar(name);
    let status = plane
        .prepare_template(name, |s| {
            crate::template_cmd::show(&pb, s.state.as_str(), s.progress.as_deref());
        })
        .await;
    pb.finish_and_clear();
    match status.error {
        None => eprintln!("palisade: template {name} is {}", status.state.as_str()),
        Some(e) => eprintln!(
            "palisade: template {name} could not be built: {e}\n\
             palisade: serving anyway; creates on {name} answer 503 with this cause until \
             `palisade template build {name}` succeeds"
        ),
    }
}

/// `palisade keys create --org NAME`: the key is printed once and never stored in clear.
pub(crate) async fn create_key(data_dir: &std::path::Path, org: &str) -> anyhow::Result<String> {
    let store = Store::open(data_dir)
        .await
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let org = match store.get_org_by_name(org).await {
        Ok(o) => o,
        Err(palisade_store::StoreError::NotFound(_)) => store.create_org(org, None).await?,
        Err(e) => return Err(e.into()),
    };
    let (_, key) = store.create_api_key(&org.id, "cli").await?;
    let out = key.expose().to_owned();
    store.close().await;
    Ok(out)
}
