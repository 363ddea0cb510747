//! The data-plane tests again, with real runc sandboxes instead of bare namespaces (issue 5): a
//! testbed world, the firewall running in its `fw` namespace with the real nftables rules, and a
//! sandbox made by `palisade-runtime` on the host template, joined to a `palisade-netns`
//! namespace and trusting its own CA. Clients run inside with `Runtime::exec`.
//!
//! A denial passes only if the client fails AND the upstream that should not be reached saw
//! nothing. "Fails fast" is checked by the client's error (refused, reset, NXDOMAIN), never by a
//! clock. Runs as root (skipped otherwise); every namespace, chain, container and data directory
//! is removed on drop, also on panic.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed step is a failed test"
)]
#![expect(
    clippy::print_stderr,
    reason = "reports create-to-first-exec and clean-up failures"
)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use palisade_firewall::{Firewall, FirewallConfig};
use palisade_netns::nft::{self, FirewallPorts, SandboxRules};
use palisade_netns::{AddressPool, RealPlatform, SandboxNet, SandboxNetSpec};
use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_runtime::{
    ExecRequest, ExecResult, HOST_TEMPLATE, Runtime, RuntimeConfig, SandboxSpec,
};
use palisade_testbed::{World, addrs};

const PROXY_PORT: u16 = 15001;
const DNS_PORT: u16 = 15053;
/// Where each sandbox finds the testbed CA (for passthrough HTTPS, which is not intercepted).
const TESTBED_CA_IN_BOX: &str = "/tmp/testbed-ca.pem";
/// curl's "Operation timed out": a denial must never look like this.
const CURL_TIMED_OUT: i32 = 28;
/// curl's "Could not resolve host".
const CURL_NO_HOST: i32 = 6;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: privileged test needs root");
            return;
        }
    };
}

/// Kills every container of a data directory and unmounts its roots without the runtime, then
/// removes the directory: the backstop when a test dies between create and delete.
fn scrub(data: &Path) {
    let runc_root = data.join("runc");
    if let Ok(rd) = std::fs::read_dir(data.join("sandboxes")) {
        for e in rd.flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
            let _ = Command::new("umount")
                .arg("-l")
                .arg(e.path().join("rootfs"))
                .output();
        }
    }
    let _ = std::fs::remove_dir_all(data);
}

/// A testbed world, the firewall in its `fw` namespace, and a sandbox runtime over a data
/// directory of its own. Fields drop in order: data directory scrubbed (in `Drop`), firewall,
/// runtimes, then the world's namespaces.
struct Bed {
    fw: Firewall,
    _fw_rt: tokio::runtime::Runtime,
    host_rt: tokio::runtime::Runtime,
    runtime: Runtime,
    data: PathBuf,
    pool: Mutex<AddressPool>,
    world: World,
}

impl Bed {
    fn new() -> Bed {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let world = World::new().unwrap();
        let fw_rt = world.fw.runtime().unwrap();
        let mut config = FirewallConfig {
            proxy_listen: format!("0.0.0.0:{PROXY_PORT}").parse().unwrap(),
            dns_listen: format!("0.0.0.0:{DNS_PORT}").parse().unwrap(),
            ..FirewallConfig::default()
        };
        config.resolver.upstreams = vec![format!("{}:53", addrs::DNS_V4).parse().unwrap()];
        config.resolver.timeout = Duration::from_secs(1);
        config.limits.peek_timeout_ms = 2_000;
        // Intercepted (transform) connections verify the upstream against the testbed CA.
        config.extra_roots = vec![world.test_ca_path().to_owned()];
        // Spawned so the listening sockets are made on the runtime's threads, inside `fw`.
        let fw = fw_rt
            .block_on(fw_rt.spawn(async move { Firewall::start(&config).await }))
            .unwrap()
            .unwrap();
        let pool_net = Ipv4Net::new(addrs::SANDBOX_POOL_V4, 20).unwrap();
        let ports = FirewallPorts {
            proxy: PROXY_PORT,
            dns: DNS_PORT,
        };
        nft::apply(
            &RealPlatform,
            Some(world.fw.name()),
            &nft::render_base(&ports, pool_net),
        )
        .unwrap();
        // A disk file system (overlay upper directories cannot live on overlayfs).
        let data = PathBuf::from(format!(
            "/var/tmp/pt-rtfw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let runtime = Runtime::new(RuntimeConfig::new(&data)).unwrap();
        let host_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bed {
            fw,
            _fw_rt: fw_rt,
            host_rt,
            runtime,
            data,
            pool: Mutex::new(AddressPool::new(pool_net).unwrap()),
            world,
        }
    }

    /// A runc sandbox on the host template behind the firewall, with the given policy (JSON as
    /// the API takes it) and a CA of its own.
    fn sandbox(&self, policy_json: &str) -> Sbx<'_> {
        let policy = parse_policy(policy_json);
        let addrs = self.pool.lock().unwrap().allocate().unwrap();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}r{:x}", std::process::id() % 0xffff, n);
        let net = palisade_netns::create_sandbox_net(
            &RealPlatform,
            &SandboxNetSpec {
                id: &id,
                host_netns: Some(self.world.fw.name()),
                addrs,
            },
        )
        .unwrap();
        // From here on the guard owns what exists, so a failure below still cleans up.
        let mut sbx = Sbx {
            bed: self,
            net,
            id,
            container: false,
        };
        sbx.apply_rules(&policy);
        let registry = self.fw.registry();
        registry.upsert(&sbx.id, addrs.sandbox, policy.compile(), 1);
        let ca = palisade_ca::SandboxCa::generate(&sbx.id).unwrap();
        let ca_pem = ca.cert_pem().to_owned();
        assert!(registry.set_ca(&sbx.id, Arc::new(ca)));

        let spec = SandboxSpec {
            id: sbx.id.clone(),
            template: HOST_TEMPLATE.into(),
            netns_path: Some(sbx.net.netns_path.clone()),
            dns_server: Some(sbx.net.addrs.host),
            ca_pem: Some(ca_pem),
            ..Default::default()
        };
        let start = Instant::now();
        sbx.container = true;
        self.host_rt.block_on(self.runtime.create(spec)).unwrap();
        // The passthrough upstreams' CA, written from inside (exec has no stdin: a here-doc).
        let r = sbx.sh(&format!(
            "cat > {TESTBED_CA_IN_BOX} <<'PALISADE_EOF'\n{}PALISADE_EOF\n",
            self.world.test_ca_pem()
        ));
        assert_eq!(r.exit_code, 0, "{}", show(&r));
        eprintln!(
            "sandbox {}: create to first exec {:?}",
            sbx.id,
            start.elapsed()
        );
        sbx
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        scrub(&self.data);
    }
}

fn parse_policy(json: &str) -> Policy {
    let spec: NetworkPolicySpec = serde_json::from_str(json).unwrap();
    spec.validate().unwrap()
}

/// One runc sandbox and its network; dropping it deletes the container, the firewall's entry,
/// the nftables chain and the namespace, in that order.
struct Sbx<'a> {
    bed: &'a Bed,
    net: SandboxNet,
    id: String,
    container: bool,
}

impl Sbx<'_> {
    fn gateway(&self) -> Ipv4Addr {
        self.net.addrs.host
    }

    fn apply_rules(&self, policy: &Policy) {
        let cidrs: Vec<Ipv4Net> = policy
            .allow_cidrs()
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let rules = SandboxRules::for_net(&self.net, cidrs);
        nft::apply(
            &RealPlatform,
            Some(self.bed.world.fw.name()),
            &nft::render_sandbox(&rules),
        )
        .unwrap();
    }

    /// `/bin/sh -c script` inside the container, as the API's exec runs it: no extra
    /// environment, a hard time limit.
    fn sh(&self, script: &str) -> ExecResult {
        let req = ExecRequest {
            command: script.into(),
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        self.bed
            .host_rt
            .block_on(self.bed.runtime.exec(&self.id, req))
            .unwrap()
    }

    /// curl trusting the testbed CA (for passthrough HTTPS), with short timeouts.
    fn curl(&self, args: &str) -> ExecResult {
        self.sh(&format!(
            "curl -sS --max-time 5 --connect-timeout 3 --cacert {TESTBED_CA_IN_BOX} {args}"
        ))
    }

    /// The sandbox's directory on the host (upper layer, spec, bind-mounted etc files).
    fn dir(&self) -> PathBuf {
        self.bed.data.join("sandboxes").join(&self.id)
    }
}

impl Drop for Sbx<'_> {
    fn drop(&mut self) {
        if self.container
            && let Err(e) = self.bed.host_rt.block_on(self.bed.runtime.delete(&self.id))
        {
            eprintln!("deleting sandbox {}: {e}", self.id);
        }
        self.bed.fw.registry().remove(&self.id);
        let _ = nft::apply(
            &RealPlatform,
            Some(self.bed.world.fw.name()),
            &nft::render_remove_sandbox(&self.id, &self.net.host_if),
        );
        let _ = palisade_netns::remove_sandbox_net(
            &RealPlatform,
            &self.id,
            Some(self.bed.world.fw.name()),
        );
        if let Ok(mut pool) = self.bed.pool.lock() {
            pool.release(self.net.addrs);
        }
    }
}

fn show(r: &ExecResult) -> String {
    format!(
        "exit {} (timed out: {})\nstdout: {}\nstderr: {}",
        r.exit_code, r.timed_out, r.stdout, r.stderr
    )
}

/// The client failed quickly and definitely (refused, reset, unresolvable), not by timing out.
fn assert_refused(r: &ExecResult, what: &str) {
    assert!(
        r.exit_code != 0 && r.exit_code != CURL_TIMED_OUT && !r.timed_out,
        "{what}: {}",
        show(r)
    );
    assert!(
        !r.stderr.contains("timed out"),
        "{what} timed out: {}",
        show(r)
    );
}

fn py_fetch(url: &str, cafile: Option<&str>) -> String {
    let ctx = match cafile {
        Some(ca) => format!("ssl.create_default_context(cafile=\"{ca}\")"),
        None => "ssl.create_default_context()".to_owned(),
    };
    format!(
        r#"python3 -c '
import hashlib, ssl, urllib.request
ctx = {ctx}
body = urllib.request.urlopen("{url}", context=ctx, timeout=5).read()
print(len(body), hashlib.sha256(body).hexdigest())
'"#
    )
}

fn expected(n: usize) -> String {
    use sha2::Digest;
    let body = palisade_testbed::pattern(n);
    format!("{} {}", n, hex::encode(sha2::Sha256::digest(&body)))
}

#[test]
fn deny_all_sandbox_reaches_nothing() {
    require_root!();
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"deny-all"}"#);

    // DNS: refused outright, over UDP and TCP, at the resolver it was given and at any other.
    for q in [
        "dig +tries=1 +time=2 alpha.test A".to_owned(),
        "dig +tcp +tries=1 +time=2 alpha.test A".to_owned(),
        format!("dig @{} +tries=1 +time=2 alpha.test A", addrs::DNS_V4),
    ] {
        let r = sb.sh(&q);
        assert!(r.stdout.contains("status: REFUSED"), "{q}: {}", show(&r));
    }
    let r = sb.curl("https://alpha.test/");
    assert_eq!(r.exit_code, CURL_NO_HOST, "{}", show(&r));

    // TLS straight to an address: reset at once.
    let r = sb.curl(&format!(
        "--resolve alpha.test:443:{} https://alpha.test/",
        addrs::GOOD_V4
    ));
    assert_refused(&r, "TLS to the good server's address");
    // Plain HTTP gets the explanatory 403 from the firewall, not the upstream.
    let r = sb.sh(&format!(
        "curl -s -o /dev/stderr -w '%{{http_code}}' --max-time 5 -H 'Host: alpha.test' http://{}/",
        addrs::GOOD_V4
    ));
    assert_eq!(r.stdout, "403", "{}", show(&r));
    assert!(r.stderr.contains("denies alpha.test"), "{}", show(&r));
    let r = sb.sh(&format!(
        "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://{}:8080/\", timeout=5)'",
        addrs::ATTACKER_V4
    ));
    assert_refused(&r, "python to the attacker");
    // Nameless TCP, UDP and ICMP: nothing comes back.
    let r = sb.sh(&format!("printf 'tcp' | nc -N -w 3 {} 7", addrs::TCP_V4));
    assert!(r.stdout.is_empty() && !r.timed_out, "{}", show(&r));
    for (ip, port) in [
        (addrs::TCP_V4, 7),
        (addrs::ATTACKER_V4, 123),
        (addrs::ATTACKER_V4, 443),
    ] {
        let r = sb.sh(&format!("printf 'udp' | nc -u -w 1 {ip} {port}"));
        assert!(r.stdout.is_empty(), "udp {ip}:{port}: {}", show(&r));
    }
    for ip in [addrs::ATTACKER_V4, addrs::TCP_V4] {
        let r = sb.sh(&format!("ping -c 1 -W 1 {ip}"));
        assert_ne!(r.exit_code, 0, "ping {ip}: {}", show(&r));
    }

    for server in ["good", "attacker", "echo", "tcp", "private", "metadata"] {
        bed.world.assert_untouched(server);
    }
    assert!(
        bed.world.log().dns_queries().is_empty(),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn custom_sandbox_reaches_exactly_its_domains_and_cidrs() {
    require_root!();
    let bed = Bed::new();
    let sb = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_domains":["alpha.test","*.wild.test"],"allow_cidrs":["{}/32"]}}"#,
        addrs::TCP_V4
    ));

    // Allowed names, over HTTPS (passthrough) and HTTP, with curl and python.
    for url in [
        "https://alpha.test/",
        "https://x.wild.test/",
        "https://a.b.wild.test/",
        "http://alpha.test/",
    ] {
        let r = sb.curl(url);
        assert_eq!(r.exit_code, 0, "{url}: {}", show(&r));
        assert!(
            r.stdout.contains("\"server\":\"good\""),
            "{url}: {}",
            show(&r)
        );
    }
    let n = 1024 * 1024 + 7;
    let r = sb.sh(&py_fetch(
        &format!("https://alpha.test/bytes/{n}"),
        Some(TESTBED_CA_IN_BOX),
    ));
    assert_eq!(r.stdout.trim(), expected(n), "{}", show(&r));
    // custom: the sandbox's own synthetic address for the name (issue 11.4), not the real one.
    let r = sb.sh("dig +short +tries=1 +time=2 alpha.test A");
    let told: Ipv4Addr = r.stdout.trim().parse().expect("one address");
    assert!(
        palisade_firewall::config::SyntheticConfig::default()
            .range
            .contains(&told),
        "{}",
        show(&r)
    );

    // Everything else: NXDOMAIN for the name, a reset or a 403 for the address.
    let r = sb.sh("dig +tries=1 +time=2 beta.test A");
    assert!(r.stdout.contains("NXDOMAIN"), "{}", show(&r));
    for url in [
        "https://beta.test/",
        "https://wild.test/",
        "https://evil.test/",
        "http://evil.test/",
    ] {
        let r = sb.curl(url);
        assert_eq!(r.exit_code, CURL_NO_HOST, "{url}: {}", show(&r));
    }
    for target in [
        format!(
            "--resolve beta.test:443:{} https://beta.test/",
            addrs::GOOD_V4
        ),
        format!(
            "--resolve evil.test:443:{} https://evil.test/",
            addrs::ATTACKER_V4
        ),
    ] {
        let r = sb.curl(&target);
        assert_refused(&r, &target);
    }
    let r = sb.sh(&format!(
        "curl -s --max-time 5 -H 'Host: evil.test' http://{}/",
        addrs::ATTACKER_V4
    ));
    assert!(r.stdout.contains("denies evil.test"), "{}", show(&r));

    // allow_cidrs: TCP, UDP and ICMP to that host; the same protocols elsewhere go nowhere.
    let r = sb.sh(&format!(
        "printf 'ping-tcp' | nc -N -w 3 {} 7",
        addrs::TCP_V4
    ));
    assert_eq!(r.stdout, "ping-tcp", "{}", show(&r));
    let r = sb.sh(&format!(
        "printf 'ping-udp' | nc -u -w 2 {} 7",
        addrs::TCP_V4
    ));
    assert_eq!(r.stdout, "ping-udp", "{}", show(&r));
    let r = sb.sh(&format!("ping -c 1 -W 2 {}", addrs::TCP_V4));
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let r = sb.sh(&format!(
        "printf 'x' | nc -N -w 3 {} 5432",
        addrs::ATTACKER_V4
    ));
    assert!(r.stdout.is_empty() && !r.timed_out, "{}", show(&r));
    let r = sb.sh(&format!(
        "printf 'x' | nc -u -w 1 {} 123",
        addrs::ATTACKER_V4
    ));
    assert!(r.stdout.is_empty(), "{}", show(&r));
    let r = sb.sh(&format!("ping -c 1 -W 1 {}", addrs::ATTACKER_V4));
    assert_ne!(r.exit_code, 0, "{}", show(&r));
    // Internal addresses stay closed even in custom mode.
    let r = sb.curl(&format!("http://{}/latest/meta-data/", addrs::METADATA_V4));
    assert!(!r.stdout.contains("\"server\""), "{}", show(&r));

    bed.world.assert_untouched("attacker");
    bed.world.assert_untouched("metadata");
    bed.world.assert_untouched("echo");
    let log = bed.world.log().for_server("good");
    assert!(
        !log.iter().any(|e| e.detail.contains("beta.test")),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn root_in_the_sandbox_cannot_undo_enforcement() {
    require_root!();
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#);
    let gw = sb.gateway();
    let r = sb.sh("id -u");
    assert_eq!(r.stdout.trim(), "0", "{}", show(&r));
    // The tools are there, so a failure below is a refusal, not "command not found".
    let r = sb.sh("for c in nft ip unshare sysctl; do command -v $c; done");
    assert_eq!(r.stdout.lines().count(), 4, "{}", show(&r));
    let before = sb.sh("ip -4 route; ip -4 addr; ip link");
    assert_eq!(before.exit_code, 0, "{}", show(&before));

    for cmd in [
        "nft flush ruleset".to_owned(),
        "nft add table inet mine".to_owned(),
        format!("ip route replace default via {gw}"),
        format!("ip route add {}/32 via {gw}", addrs::ATTACKER_V4),
        "ip addr add 100.96.15.250/32 dev eth0".to_owned(),
        "ip link set eth0 down".to_owned(),
        "ip link add dummy0 type dummy".to_owned(),
        "unshare -n true".to_owned(),
        "sysctl -w net.ipv4.ip_forward=0".to_owned(),
    ] {
        let r = sb.sh(&cmd);
        assert!(
            r.exit_code != 0 && r.exit_code != 127,
            "{cmd} was not refused as root inside: {}",
            show(&r)
        );
    }
    let after = sb.sh("ip -4 route; ip -4 addr; ip link");
    assert_eq!(before.stdout, after.stdout, "the network inside changed");

    // The firewall's chain for this sandbox is still in place on the host side.
    let chains = Command::new("ip")
        .args([
            "netns",
            "exec",
            bed.world.fw.name(),
            "nft",
            "list",
            "table",
            "inet",
            "palisade",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&chains.stdout).contains(&sb.id),
        "{}",
        String::from_utf8_lossy(&chains.stdout)
    );
    // And it still decides: the attacker is out of reach, the allowed name works.
    let r = sb.sh(&format!(
        "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY; curl -sS --max-time 3 http://{}/",
        addrs::ATTACKER_V4
    ));
    assert!(!r.stdout.contains("attacker"), "{}", show(&r));
    let r = sb.sh(&format!(
        "curl -sS --max-time 3 --interface 100.96.15.250 http://{}/",
        addrs::ATTACKER_V4
    ));
    assert_ne!(r.exit_code, 0, "{}", show(&r));
    bed.world.assert_untouched("attacker");
    let r = sb.curl("https://alpha.test/");
    assert_eq!(r.exit_code, 0, "{}", show(&r));
}

/// Everywhere a secret could hide inside the sandbox: environment (its own and every
/// process's), command lines, and the files it can write (searched from inside, bounded).
fn assert_secret_absent_inside(sb: &Sbx<'_>, secret: &str) {
    let r = sb.sh(&format!(
        "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ps -eo args; \
         timeout 20 grep -rslF -- '{secret}' /etc /tmp /run /dev/shm \
         /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; echo \"scanned $?\""
    ));
    // grep: 0 found (only its own command line, checked below), 1 nothing, 2 some unreadable
    // /proc entry; 124 would be the time limit, and then the scan proved nothing.
    assert!(
        ["scanned 0", "scanned 1", "scanned 2"]
            .iter()
            .any(|s| r.stdout.contains(s)),
        "{}",
        show(&r)
    );
    let hits = r.stdout.matches(secret).count();
    // The scan's own command line names the secret: grep's (and its sh's) argv, printed by ps
    // and found in /proc/*/cmdline. Nothing else may.
    assert!(
        r.stdout
            .lines()
            .filter(|l| l.contains(secret))
            .all(|l| l.contains("grep -rslF") || l.starts_with("/proc/")),
        "secret inside the sandbox ({hits} hits):\n{}",
        r.stdout
    );
    for l in r.stdout.lines().filter(|l| l.starts_with("/proc/")) {
        assert!(l.ends_with("/cmdline"), "secret in {l}");
    }
}

/// Every file the sandbox has on the host beside the template: its upper layer (all it ever
/// wrote), spec, state and bind-mounted /etc files.
fn assert_secret_absent_on_disk(sb: &Sbx<'_>, secret: &str) {
    let dir = sb.dir();
    let mut paths = vec![dir.join("upper"), dir.join("etc")];
    for f in ["config.json", "sandbox.json", "init.log"] {
        paths.push(dir.join(f));
    }
    let out = Command::new("grep")
        .args(["-rslF", "--", secret])
        .args(paths.iter().filter(|p| p.exists()))
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "secret in {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // grep: 1 = searched and found nothing.
    assert_eq!(out.status.code(), Some(1), "{:?}", out);
}

#[test]
fn transform_injects_the_secret_that_never_enters_the_sandbox() {
    require_root!();
    let bed = Bed::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("sk-rtfw-{:x}{nanos:x}", std::process::id());
    let sb = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_domains":["alpha.test"],"transforms":[{{"domain":"api.example.test","inject_headers":{{"Authorization":"Bearer {secret}"}},"strip_headers":["X-Debug"]}}]}}"#
    ));
    assert_secret_absent_inside(&sb, &secret);
    assert_secret_absent_on_disk(&sb, &secret);

    // No --cacert, no environment: the sandbox's own CA is already trusted. The client sends
    // its own Authorization and X-Debug; the firewall strips X-Debug and replaces the other.
    let r = sb.sh(
        "curl -sS --max-time 5 -H 'Authorization: Bearer from-sandbox' -H 'X-Debug: 1' \
         https://api.example.test/echo",
    );
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let echo: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(echo["server"], "good", "{echo}");
    assert_eq!(echo["sni"], "api.example.test", "{echo}");
    // The upstream got the secret (its digest says so); the sandbox sees only the marker.
    let headers = &echo["header_map"];
    assert_eq!(
        echo["header_sha256"]["authorization"],
        serde_json::json!([palisade_testbed::sha256_hex(
            format!("Bearer {secret}").as_bytes()
        )]),
        "{echo}"
    );
    assert_eq!(
        headers["authorization"],
        serde_json::json!(["[REDACTED]"]),
        "{echo}"
    );
    assert!(headers.get("x-debug").is_none(), "{echo}");
    // The leaf the client saw was minted by the sandbox CA.
    let r = sb.sh(
        "echo | timeout 5 openssl s_client -connect api.example.test:443 \
         -servername api.example.test 2>/dev/null | openssl x509 -noout -issuer",
    );
    assert!(r.stdout.contains(&sb.id), "{}", show(&r));

    // Python with its default context, no flags either.
    let r = sb.sh(r#"python3 -c '
import json, urllib.request
body = urllib.request.urlopen("https://api.example.test/py", timeout=5).read()
print(json.loads(body)["header_sha256"]["authorization"][0])
'"#);
    assert_eq!(
        r.stdout.trim(),
        palisade_testbed::sha256_hex(format!("Bearer {secret}").as_bytes()),
        "{}",
        show(&r)
    );

    // A passthrough name is not intercepted: only the upstream's own CA verifies it, and no
    // header is added there.
    let r = sb.sh("curl -sS --max-time 5 https://alpha.test/");
    assert_ne!(
        r.exit_code,
        0,
        "passthrough verified by the sandbox CA: {}",
        show(&r)
    );
    let r = sb.curl("https://alpha.test/");
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    assert!(!r.stdout.contains(&secret), "{}", show(&r));
    assert!(!r.stdout.contains("authorization"), "{}", show(&r));

    // The secret went out only to the good server, and is still nowhere inside.
    assert_secret_absent_inside(&sb, &secret);
    assert_secret_absent_on_disk(&sb, &secret);
    bed.world.assert_untouched("attacker");
    let events = bed.fw.events().recent(Some(&sb.id), 100);
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| !format!("{e:?}").contains(&secret)),
        "secret in an egress event"
    );
}
