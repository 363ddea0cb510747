//! Pure rendering of the `inet palisade` table as `nft -f` scripts. Every script is one
//! transaction and safe to apply again.

use std::fmt::Write as _;

use ipnet::Ipv4Net;

use super::{FirewallPorts, SandboxRules};
use crate::NetnsError;
use crate::sandbox::{HOST_IF_PREFIX, validate_id};

/// Table family and name.
pub const TABLE: &str = "inet palisade";
/// Verdict map: sandbox interface → its prerouting chain.
pub const MAP_PRE: &str = "sandbox_pre";
/// Verdict map: sandbox interface → its forward chain.
pub const MAP_FWD: &str = "sandbox_fwd";
/// First line of a script the renderer refused to produce; [`super::apply`] turns it into an
/// error, and `nft` itself would reject the line after it.
pub(super) const INVALID_MARKER: &str = "# palisade-invalid: ";

const BASE_CHAINS: [(&str, &str); 5] = [
    (
        "raw_prerouting",
        "type filter hook prerouting priority raw; policy accept;",
    ),
    (
        "nat_prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
    ),
    (
        "input",
        "type filter hook input priority filter; policy accept;",
    ),
    (
        "forward",
        "type filter hook forward priority filter; policy accept;",
    ),
    (
        "nat_postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
    ),
];
const HELPER_CHAINS: [&str; 2] = ["sandbox_input", "sandbox_reject"];

/// The sandbox's prerouting chain name, `sb_<id>_pre`.
pub fn pre_chain(id: &str) -> String {
    format!("sb_{id}_pre")
}

/// The sandbox's forward chain name, `sb_<id>_fwd`.
pub fn fwd_chain(id: &str) -> String {
    format!("sb_{id}_fwd")
}

fn invalid(e: &NetnsError) -> String {
    // Debug-escape so no input can end the comment line and smuggle a statement in.
    let reason = format!("{:?}", e.to_string());
    format!("{INVALID_MARKER}{reason}\npalisade-invalid-script\n")
}

/// Ports must be distinct and not 53: a redirect from 53 to 53 is not NAT, so the
/// `ct status dnat` accept rule would not see it.
pub fn validate_ports(ports: &FirewallPorts) -> Result<(), NetnsError> {
    let bad = |m: &str| Err(NetnsError::InvalidRules(m.to_owned()));
    if ports.proxy == 0 || ports.dns == 0 {
        return bad("ports must not be 0");
    }
    if ports.proxy == ports.dns {
        return bad("the proxy and DNS ports must differ");
    }
    if ports.proxy == 53 || ports.dns == 53 {
        return bad("the proxy and DNS ports must not be 53, the port redirected to them");
    }
    Ok(())
}

/// Checks what [`render_sandbox`] interpolates.
pub fn validate_rules(r: &SandboxRules) -> Result<(), NetnsError> {
    validate_id(&r.id)?;
    validate_host_if(&r.host_if)?;
    if r.addrs.sandbox.is_unspecified() || r.addrs.sandbox.is_broadcast() {
        return Err(NetnsError::InvalidRules(format!(
            "sandbox address {} cannot be a source",
            r.addrs.sandbox
        )));
    }
    Ok(())
}

fn validate_host_if(host_if: &str) -> Result<(), NetnsError> {
    // `plh-<valid id>`: the rules match sandbox links by that prefix.
    let ok = host_if
        .strip_prefix(HOST_IF_PREFIX)
        .is_some_and(|rest| validate_id(rest).is_ok());
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidRules(format!(
            "host interface {:?} is not {HOST_IF_PREFIX}<id>",
            host_if.chars().take(32).collect::<String>()
        )))
    }
}

/// The table, the dispatch maps and the base chains. Applying it again flushes and refills the
/// base chains in the same transaction and keeps every sandbox's chains and map elements.
pub fn render_base(ports: &FirewallPorts, pool: Ipv4Net) -> String {
    if let Err(e) = validate_ports(ports) {
        return invalid(&e);
    }
    let (proxy, dns) = (ports.proxy, ports.dns);
    let pool = pool.trunc();
    let mut s = String::new();
    s.push_str("# palisade base: table, dispatch maps, base chains (flushed and refilled here)\n");
    s.push_str("table inet palisade {\n");
    for map in [MAP_PRE, MAP_FWD] {
        let _ = writeln!(s, "\tmap {map} {{\n\t\ttype ifname : verdict\n\t}}");
    }
    for (chain, hook) in BASE_CHAINS {
        let _ = writeln!(s, "\tchain {chain} {{\n\t\t{hook}\n\t}}");
    }
    for chain in HELPER_CHAINS {
        let _ = writeln!(s, "\tchain {chain} {{\n\t}}");
    }
    s.push_str("}\n");
    for chain in BASE_CHAINS.iter().map(|(c, _)| *c).chain(HELPER_CHAINS) {
        let _ = writeln!(s, "flush chain {TABLE} {chain}");
    }
    let _ = write!(
        s,
        r#"table inet palisade {{
	chain raw_prerouting {{
		iifname vmap @{MAP_PRE}
		iifname "{HOST_IF_PREFIX}*" drop comment "sandbox link without rules"
	}}
	chain nat_prerouting {{
		iifname "{HOST_IF_PREFIX}*" udp dport 53 redirect to :{dns}
		iifname "{HOST_IF_PREFIX}*" tcp dport 53 redirect to :{dns}
		iifname "{HOST_IF_PREFIX}*" meta l4proto tcp redirect to :{proxy}
	}}
	chain input {{
		iifname "{HOST_IF_PREFIX}*" goto sandbox_input
		tcp dport {proxy} drop comment "proxy: sandboxes only"
		meta l4proto {{ tcp, udp }} th dport {dns} drop comment "dns: sandboxes only"
	}}
	chain sandbox_input {{
		ct state established,related accept
		ct status dnat tcp dport {proxy} accept
		ct status dnat meta l4proto {{ tcp, udp }} th dport {dns} accept
		goto sandbox_reject
	}}
	chain forward {{
		oifname "{HOST_IF_PREFIX}*" ct state established,related accept
		oifname "{HOST_IF_PREFIX}*" drop
		iifname vmap @{MAP_FWD}
		iifname "{HOST_IF_PREFIX}*" goto sandbox_reject
	}}
	chain sandbox_reject {{
		meta l4proto tcp reject with tcp reset
		reject with icmpx admin-prohibited
	}}
	chain nat_postrouting {{
		ip saddr {pool} oifname != "{HOST_IF_PREFIX}*" masquerade
	}}
}}
"#
    );
    s
}

fn declare_sandbox_chains(s: &mut String, pre: &str, fwd: &str) {
    let _ = writeln!(
        s,
        "table inet palisade {{\n\tchain {pre} {{\n\t}}\n\tchain {fwd} {{\n\t}}\n}}"
    );
}

/// One sandbox's chains and its elements in the dispatch maps. Applying it again redefines the
/// chains (flush and refill in one transaction), so it is also how a policy's CIDRs change.
/// Needs the base table ([`render_base`]); without it the script fails, changing nothing.
pub fn render_sandbox(r: &SandboxRules) -> String {
    if let Err(e) = validate_rules(r) {
        return invalid(&e);
    }
    let (pre, fwd) = (pre_chain(&r.id), fwd_chain(&r.id));
    let mut s = String::new();
    let _ = writeln!(s, "# palisade sandbox {} on {}", r.id, r.host_if);
    declare_sandbox_chains(&mut s, &pre, &fwd);
    let _ = writeln!(s, "flush chain {TABLE} {pre}\nflush chain {TABLE} {fwd}");
    let _ = writeln!(
        s,
        "table inet palisade {{\n\tchain {pre} {{\n\t\tmeta nfproto ipv6 drop"
    );
    if let Some(l) = r.dns_limit {
        let _ = writeln!(
            s,
            "\t\tudp dport 53 limit rate over {}/second burst {} packets counter drop comment \"DNS past the sandbox's rate\"",
            l.per_second.max(1),
            l.burst.max(1)
        );
    }
    let _ = writeln!(
        s,
        "\t\tip saddr {} accept\n\t\tdrop comment \"spoofed source\"\n\t}}",
        r.addrs.sandbox
    );
    let _ = writeln!(s, "\tchain {fwd} {{");
    let cidrs = Ipv4Net::aggregate(&r.allow_cidrs_v4.iter().map(Ipv4Net::trunc).collect());
    if !cidrs.is_empty() {
        let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "\t\tip daddr {{ {} }} meta l4proto {{ udp, icmp }} accept",
            list.join(", ")
        );
    }
    s.push_str("\t\tgoto sandbox_reject\n\t}\n}\n");
    let _ = writeln!(
        s,
        "add element {TABLE} {MAP_PRE} {{ \"{0}\" : goto {pre} }}\nadd element {TABLE} {MAP_FWD} {{ \"{0}\" : goto {fwd} }}",
        r.host_if
    );
    s
}

/// Removes one sandbox's map elements and chains; applies whether or not they exist (each is
/// created first, then deleted, in the same transaction). Needs the base table.
pub fn render_remove_sandbox(id: &str, host_if: &str) -> String {
    if let Err(e) = validate_id(id).and_then(|()| validate_host_if(host_if)) {
        return invalid(&e);
    }
    let (pre, fwd) = (pre_chain(id), fwd_chain(id));
    let mut s = String::new();
    let _ = writeln!(s, "# palisade: remove sandbox {id} on {host_if}");
    declare_sandbox_chains(&mut s, &pre, &fwd);
    let _ = write!(
        s,
        "add element {TABLE} {MAP_PRE} {{ \"{host_if}\" : goto {pre} }}
add element {TABLE} {MAP_FWD} {{ \"{host_if}\" : goto {fwd} }}
delete element {TABLE} {MAP_PRE} {{ \"{host_if}\" }}
delete element {TABLE} {MAP_FWD} {{ \"{host_if}\" }}
flush chain {TABLE} {pre}
flush chain {TABLE} {fwd}
delete chain {TABLE} {pre}
delete chain {TABLE} {fwd}
"
    );
    s
}

/// The whole table from state in one transaction: the old table is deleted and the new one
/// built in the same batch, so there is no instant without rules.
pub fn render_full(ports: &FirewallPorts, pool: Ipv4Net, sandboxes: &[SandboxRules]) -> String {
    let base = render_base(ports, pool);
    if base.starts_with(INVALID_MARKER) {
        return base;
    }
    let mut s = String::from(
        "# palisade: whole table from state, one transaction\ntable inet palisade {\n}\ndelete table inet palisade\n",
    );
    s.push_str(&base);
    for r in sandboxes {
        let one = render_sandbox(r);
        if one.starts_with(INVALID_MARKER) {
            // One bad sandbox must not leave the others without rules: refuse the whole script,
            // so the table in the kernel stays as it was.
            return one;
        }
        s.push_str(&one);
    }
    s
}
