use std::net::Ipv4Addr;

use super::*;
use crate::RecordingNetPlatform;

fn ports() -> FirewallPorts {
    FirewallPorts {
        proxy: 15001,
        dns: 15053,
    }
}

fn rules(id: &str, cidrs: &[&str]) -> SandboxRules {
    SandboxRules {
        id: id.to_owned(),
        host_if: format!("plh-{id}"),
        addrs: SandboxAddrs {
            host: Ipv4Addr::new(100, 96, 0, 1),
            sandbox: Ipv4Addr::new(100, 96, 0, 2),
            prefix_len: 30,
        },
        allow_cidrs_v4: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        dns_limit: None,
    }
}

fn pool() -> Ipv4Net {
    "100.96.0.0/16".parse().unwrap()
}

#[test]
fn bad_ports_render_a_script_apply_refuses() {
    for (proxy, dns) in [
        (0, 15053),
        (15001, 0),
        (15001, 15001),
        (53, 15053),
        (15001, 53),
    ] {
        let script = render_base(&FirewallPorts { proxy, dns }, pool());
        let p = RecordingNetPlatform::new();
        let err = apply(&p, None, &script).unwrap_err();
        assert!(matches!(err, NetnsError::InvalidRules(_)), "{err}");
        assert!(p.calls().is_empty());
        let full = render_full(&FirewallPorts { proxy, dns }, pool(), &[]);
        assert!(apply(&p, None, &full).is_err());
    }
}

#[test]
fn injection_through_fields_is_refused() {
    let mut r = rules("ab", &[]);
    r.id = "ab_pre {\n}\nflush ruleset".to_owned();
    let script = render_sandbox(&r);
    assert!(!script.contains("\nflush ruleset"), "{script}");
    assert!(apply(&RecordingNetPlatform::new(), None, &script).is_err());

    let mut r = rules("ab", &[]);
    r.host_if = "plh-ab\" } ; flush ruleset".to_owned();
    assert!(apply(&RecordingNetPlatform::new(), None, &render_sandbox(&r)).is_err());
    r.host_if = "eth0".to_owned();
    assert!(apply(&RecordingNetPlatform::new(), None, &render_sandbox(&r)).is_err());
    r.host_if = "plh-abcdefghijk".to_owned();
    assert!(apply(&RecordingNetPlatform::new(), None, &render_sandbox(&r)).is_err());

    let mut r = rules("ab", &[]);
    r.addrs.sandbox = Ipv4Addr::UNSPECIFIED;
    assert!(apply(&RecordingNetPlatform::new(), None, &render_sandbox(&r)).is_err());

    assert!(
        apply(
            &RecordingNetPlatform::new(),
            None,
            &render_remove_sandbox("a b", "plh-a")
        )
        .is_err()
    );
    assert!(
        apply(
            &RecordingNetPlatform::new(),
            None,
            &render_remove_sandbox("ab", "x")
        )
        .is_err()
    );

    // A bad sandbox spoils the whole full script, so the kernel keeps the old table.
    let full = render_full(&ports(), pool(), &[rules("ok", &[]), rules("B@d", &[])]);
    assert!(apply(&RecordingNetPlatform::new(), None, &full).is_err());
}

#[test]
fn invalid_script_is_also_rejected_by_nft_itself() {
    // The marker is a comment; the line after it is not nftables syntax.
    let script = render_remove_sandbox("UPPER", "plh-x");
    let mut lines = script.lines();
    assert!(lines.next().unwrap().starts_with("# palisade-invalid: "));
    assert_eq!(lines.next(), Some("palisade-invalid-script"));
}

#[test]
fn cidrs_are_aggregated_and_truncated() {
    let s = render_sandbox(&rules(
        "ab",
        &["10.0.0.0/24", "10.0.1.0/24", "10.0.0.7/25", "192.0.2.9/32"],
    ));
    assert!(
        s.contains("ip daddr { 10.0.0.0/23, 192.0.2.9/32 } meta l4proto { udp, icmp } accept"),
        "{s}"
    );
}

#[test]
fn no_cidrs_means_no_accept_rule() {
    let s = render_sandbox(&rules("ab", &[]));
    assert!(!s.contains("accept\n\t\tgoto"), "{s}");
    assert!(
        s.contains("chain sb_ab_fwd {\n\t\tgoto sandbox_reject\n\t}"),
        "{s}"
    );
}

#[test]
fn apply_runs_nft_in_the_host_namespace() {
    let p = RecordingNetPlatform::new();
    let script = render_base(&ports(), pool());
    apply(&p, Some("pt-1-fw"), &script).unwrap();
    apply(&p, None, &script).unwrap();
    check(&p, None, &script).unwrap();
    let calls = p.calls();
    assert_eq!(calls[0].line(), "ip netns exec pt-1-fw nft -f -");
    assert_eq!(calls[0].stdin.as_deref(), Some(script.as_str()));
    assert_eq!(calls[1].line(), "nft -f -");
    assert_eq!(calls[2].line(), "nft -c -f -");
    assert!(apply(&p, Some("-x"), &script).is_err());
}

#[test]
fn list_sandbox_ids_parses_chains() {
    let listing = "table inet palisade {\n\tmap sandbox_pre {\n\t\ttype ifname : verdict\n\t}\n\tchain raw_prerouting {\n\t}\n\tchain sb_ab12_pre {\n\t}\n\tchain sb_ab12_fwd {\n\t}\n\tchain sb_x_fwd {\n\t}\n\tchain sb_Bad_pre {\n\t}\n}\n";
    let p = RecordingNetPlatform::new()
        .respond(
            "ip netns exec h nft list tables inet",
            "table inet filter\ntable inet palisade\n",
        )
        .respond("ip netns exec h nft -t list table inet palisade", listing);
    assert_eq!(list_sandbox_ids(&p, Some("h")).unwrap(), ["ab12", "x"]);
}

#[test]
fn list_sandbox_ids_without_table_is_empty() {
    let p = RecordingNetPlatform::new().respond("nft list tables inet", "table inet other\n");
    assert!(list_sandbox_ids(&p, None).unwrap().is_empty());
    assert_eq!(p.lines(), ["nft list tables inet"]);
}
