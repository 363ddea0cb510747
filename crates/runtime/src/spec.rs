//! Pure generation of a sandbox's OCI runtime spec (`config.json`): no I/O here, so the
//! whole policy (namespaces, limits, capabilities, masked paths) is golden-tested.

use std::collections::HashSet;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, get_default_maskedpaths,
    get_default_mounts, get_default_namespaces, get_default_readonly_paths,
};

use crate::error::{Result, RuntimeError};

/// Where the host's init binary appears inside every sandbox. Under `/dev` (a tmpfs that runc
/// creates) so it is never written into the overlay's upper directory or a snapshot.
pub const INIT_IN_SANDBOX: &str = "/dev/.palisade-init";

const CPU_PERIOD_US: u64 = 100_000;

/// Everything the spec depends on, already validated.
#[derive(Debug, Clone)]
pub(crate) struct SpecInput {
    /// The merged overlay root on the host.
    pub rootfs: PathBuf,
    pub hostname: String,
    /// `KEY=VALUE` entries, in order.
    pub env: Vec<String>,
    /// The init binary on the host and its arguments.
    pub init: PathBuf,
    pub init_args: Vec<String>,
    pub netns_path: Option<PathBuf>,
    pub cgroups_path: String,
    pub vcpu: Option<f64>,
    pub memory_mib: Option<u64>,
    pub pids_limit: i64,
    pub nofile: u64,
    /// Host files bind-mounted read-only over `/etc/{resolv.conf,hostname,hosts}`.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// Extra host paths to hide (the data directory, when the template can see it).
    pub masked: Vec<String>,
    /// The sandbox's user namespace (pinned nsfs file) and the first host id of its range.
    pub userns: Option<(PathBuf, u32)>,
    /// Add `CAP_NET_RAW` to [`CAPS`].
    pub net_raw: bool,
}

/// The container engines' default capability set less `NET_RAW`: root inside can own files and
/// bind low ports but cannot touch routes, interfaces, firewall rules or mounts, nor open raw
/// or packet sockets (crafted packets, a large kernel surface). `NET_RAW` is added only when
/// the policy lets ICMP out (`allow_cidrs`): a `ping` with that file capability fails to
/// start without it (ping binaries without it use ICMP datagram sockets, which the sandbox's
/// namespace allows through `net.ipv4.ping_group_range`).
const CAPS: [Capability; 13] = [
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Mknod,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

pub(crate) fn spec_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Spec(e.to_string())
}

fn bind(source: PathBuf, dest: &str, ro: bool) -> Result<Mount> {
    let mut options = vec!["rbind".to_owned(), "nosuid".to_owned(), "nodev".to_owned()];
    if ro {
        options.push("ro".to_owned());
    }
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(spec_err)
}

/// Builds the spec.
pub(crate) fn build(input: &SpecInput) -> Result<Spec> {
    let mut caps: HashSet<Capability> = CAPS.into_iter().collect();
    if input.net_raw {
        caps.insert(Capability::NetRaw);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(spec_err)?;
    let mut args = vec![INIT_IN_SANDBOX.to_owned()];
    args.extend(input.init_args.iter().cloned());
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(input.env.clone())
        .cwd("/")
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(input.nofile)
                .soft(input.nofile)
                .build()
                .map_err(spec_err)?,
        ])
        .build()
        .map_err(spec_err)?;

    let mut mounts = get_default_mounts();
    // The init is the host's static binary, read-only and not executable for writes.
    let mut init = bind(input.init.clone(), INIT_IN_SANDBOX, true)?;
    if let Some(o) = init.options_mut() {
        o.retain(|x| x != "nodev");
    }
    mounts.push(init);
    for (src, dest) in &input.etc_files {
        mounts.push(bind(src.clone(), dest, true)?);
    }

    let mut namespaces = get_default_namespaces();
    namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(p) = &input.netns_path {
        net = net.path(p.clone());
    }
    namespaces.push(net.build().map_err(spec_err)?);
    let mut id_maps = Vec::new();
    if let Some((path, base)) = &input.userns {
        // runc joins the namespace made beforehand (it owns the network namespace, so runc
        // exec can enter both); the maps repeat its mapping for runc's own bookkeeping.
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(path.clone())
                .build()
                .map_err(spec_err)?,
        );
        id_maps.push(
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(*base)
                .size(crate::userns::IDS_PER_SANDBOX)
                .build()
                .map_err(spec_err)?,
        );
    }

    // Every device denied first (runc then allows its standard nodes): with CAP_MKNOD, a node
    // made for a host disk must still be unusable.
    let deny_devices = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_err)?;
    let mut resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_devices])
        .pids(
            LinuxPidsBuilder::default()
                .limit(input.pids_limit)
                .build()
                .map_err(spec_err)?,
        );
    if let Some(mib) = input.memory_mib {
        let bytes = i64::try_from(mib.saturating_mul(1024 * 1024))
            .map_err(|_| RuntimeError::Invalid("memory limit too large".into()))?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .map_err(spec_err)?,
        );
    }
    if let Some(vcpu) = input.vcpu {
        // The value was validated as finite and within (0, 1024]: the product fits an i64.
        let quota = (vcpu * CPU_PERIOD_US as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(spec_err)?,
        );
    }

    let mut masked = get_default_maskedpaths();
    // Beyond oci-spec's defaults, as the engines mask them: power readings (the Platypus
    // side channel).
    masked.push("/sys/devices/virtual/powercap".to_owned());
    masked.extend(input.masked.iter().cloned());
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .resources(resources.build().map_err(spec_err)?)
        .masked_paths(masked)
        .readonly_paths(get_default_readonly_paths())
        .seccomp(crate::seccomp::profile()?);
    if !id_maps.is_empty() {
        linux = linux.uid_mappings(id_maps.clone()).gid_mappings(id_maps);
    }
    let linux = linux.build().map_err(spec_err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(input.rootfs.clone())
                .readonly(false)
                .build()
                .map_err(spec_err)?,
        )
        .hostname(input.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

/// Renders the spec as deterministic JSON (capability sets are hash sets in `oci-spec`: sort).
pub(crate) fn render(spec: &Spec) -> Result<String> {
    let mut v = serde_json::to_value(spec).map_err(spec_err)?;
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_string_pretty(&v).map_err(spec_err)
}

/// Validates the CPU and memory request before it reaches the spec.
pub(crate) fn validate_limits(vcpu: Option<f64>, memory_mib: Option<u64>, pids: i64) -> Result<()> {
    if let Some(v) = vcpu {
        if !v.is_finite() || v <= 0.0 || v > 1024.0 {
            return Err(RuntimeError::Invalid(format!(
                "vcpu {v} must be in (0, 1024]"
            )));
        }
        if (v * CPU_PERIOD_US as f64).round() < 1000.0 {
            return Err(RuntimeError::Invalid(format!("vcpu {v} is below 0.01")));
        }
    }
    if let Some(m) = memory_mib
        && !(16..=4 * 1024 * 1024).contains(&m)
    {
        return Err(RuntimeError::Invalid(format!(
            "memory_mib {m} must be in 16..=4194304"
        )));
    }
    if !(8..=4_194_304).contains(&pids) {
        return Err(RuntimeError::Invalid(format!(
            "pids limit {pids} must be in 8..=4194304"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            rootfs: "/data/sandboxes/sbx-1/rootfs".into(),
            hostname: "sbx-1".into(),
            env: vec![
                "PATH=/usr/bin:/bin".into(),
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".into(),
            ],
            init: "/usr/bin/catatonit".into(),
            init_args: vec!["-P".into()],
            netns_path: Some("/var/run/netns/pls-sbx-1".into()),
            cgroups_path: "/palisade/sbx-1".into(),
            vcpu: Some(1.5),
            memory_mib: Some(512),
            pids_limit: 1024,
            nofile: 16_384,
            etc_files: vec![(
                "/data/sandboxes/sbx-1/etc/resolv.conf".into(),
                "/etc/resolv.conf",
            )],
            masked: vec!["/data".into()],
            userns: Some(("/data/userns/sbx-1/ns".into(), 0x7000_0000)),
            net_raw: false,
        }
    }

    /// Golden test: the generated config.json must match `testdata/config.golden.json`.
    /// Regenerate with `PALISADE_UPDATE_GOLDEN=1` after a deliberate change, and review the diff.
    #[test]
    fn golden_config() {
        let got = render(&build(&input()).unwrap()).unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config.golden.json");
        if std::env::var_os("PALISADE_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            got,
            want.trim_end(),
            "config.json differs from the golden file"
        );
    }

    #[test]
    fn no_network_namespace_path_means_fresh_namespace() {
        let mut i = input();
        i.netns_path = None;
        let v: serde_json::Value =
            serde_json::from_str(&render(&build(&i).unwrap()).unwrap()).unwrap();
        let ns = v.pointer("/linux/namespaces").unwrap().as_array().unwrap();
        let net: Vec<_> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net.len(), 1);
        assert!(net[0].get("path").is_none());
    }

    #[test]
    fn no_admin_capabilities_and_limits_set() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&build(&input()).unwrap()).unwrap()).unwrap();
        let caps = v
            .pointer("/process/capabilities/bounding")
            .unwrap()
            .to_string();
        for forbidden in [
            "CAP_NET_RAW",
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
            "CAP_SYS_MODULE",
            "CAP_SYS_PTRACE",
        ] {
            assert!(!caps.contains(forbidden), "{forbidden} in {caps}");
        }
        assert_eq!(
            v.pointer("/linux/resources/memory/limit").unwrap(),
            512 * 1024 * 1024
        );
        assert_eq!(v.pointer("/linux/resources/cpu/quota").unwrap(), 150_000);
        assert_eq!(v.pointer("/linux/resources/pids/limit").unwrap(), 1024);
        assert!(
            v.pointer("/linux/maskedPaths")
                .unwrap()
                .to_string()
                .contains("\"/data\"")
        );
    }

    #[test]
    fn net_raw_only_when_asked() {
        let mut i = input();
        i.net_raw = true;
        let v = serde_json::to_value(build(&i).unwrap()).unwrap();
        let caps = v
            .pointer("/process/capabilities/bounding")
            .unwrap()
            .to_string();
        assert!(caps.contains("CAP_NET_RAW"), "{caps}");
    }

    #[test]
    fn limits_validated() {
        assert!(validate_limits(Some(0.5), Some(256), 100).is_ok());
        for (c, m, p) in [
            (Some(0.0), None, 100),
            (Some(f64::NAN), None, 100),
            (Some(-1.0), None, 100),
            (Some(0.001), None, 100),
            (None, Some(1), 100),
            (None, None, 0),
        ] {
            assert!(validate_limits(c, m, p).is_err(), "{c:?} {m:?} {p}");
        }
    }
}
