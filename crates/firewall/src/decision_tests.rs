use super::*;
use crate::hold::Decision;

#[test]
fn rules_render_as_events_name_them() {
    let name = palisade_policy::canonicalize(b"a.test").unwrap();
    let pattern = DomainPattern::parse("*.a.test").unwrap();
    let cases = [
        (RuleRef::Policy(Rule::AllowAll), "allow-all"),
        (RuleRef::Policy(Rule::DenyAll), "deny-all"),
        (RuleRef::Policy(Rule::NoMatch), "default"),
        (
            RuleRef::Policy(Rule::Domain(pattern.clone())),
            "domain:*.a.test",
        ),
        (RuleRef::AllowCidrs, "allow_cidrs"),
        (RuleRef::DnsBound(name), "dns-bound:a.test"),
        (RuleRef::Budget(BudgetScope::Sandbox), "budget:sandbox"),
        (
            RuleRef::Budget(BudgetScope::Domain(pattern)),
            "budget:domain:*.a.test",
        ),
        (RuleRef::HttpRule(3), "http-rule:3"),
        (RuleRef::HttpRules, "http-rules"),
        (RuleRef::Protocol, "protocol"),
        (RuleRef::Authority, "authority"),
        (RuleRef::Address, "address"),
        (RuleRef::Interception, "transform"),
        (RuleRef::Scrub, "scrub"),
        (RuleRef::Limit, "limit"),
        (RuleRef::Malformed, "malformed"),
        (RuleRef::Synthetic, "synthetic"),
        (RuleRef::AddressClass, "address-class"),
        (RuleRef::DnsRateLimit, "dns-rate-limit"),
        (
            RuleRef::Approval("apr-0123abcd-7".into()),
            "approval:apr-0123abcd-7",
        ),
    ];
    for (rule, text) in cases {
        assert_eq!(rule.to_string(), text);
        // Serialised events carry the same text.
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            serde_json::json!(text)
        );
    }
}

#[test]
fn every_rule_text_reads_back_with_its_bearing() {
    let name = palisade_policy::canonicalize("Bücher.A.Test.".as_bytes()).unwrap();
    let pattern = || DomainPattern::parse("*.xn--55qx5d.cn").unwrap();
    let decided = |d| RuleRef::Held(HoldRule::Decided(d));
    // One rule of every variant, with the payloads the text carries.
    let rules = [
        RuleRef::Policy(Rule::AllowAll),
        RuleRef::Policy(Rule::DenyAll),
        RuleRef::Policy(Rule::Domain(pattern())),
        RuleRef::Policy(Rule::Transform {
            index: 2,
            pattern: DomainPattern::parse("api.a.test").unwrap(),
        }),
        RuleRef::Policy(Rule::NoMatch),
        RuleRef::AllowCidrs,
        RuleRef::DnsBound(name),
        RuleRef::Budget(BudgetScope::Sandbox),
        RuleRef::Budget(BudgetScope::Domain(pattern())),
        RuleRef::HttpRule(12),
        RuleRef::HttpRules,
        RuleRef::Protocol,
        RuleRef::Authority,
        RuleRef::Address,
        RuleRef::Interception,
        RuleRef::Scrub,
        RuleRef::Limit,
        RuleRef::Malformed,
        RuleRef::Synthetic,
        RuleRef::AddressClass,
        RuleRef::DnsRateLimit,
        RuleRef::Audit,
        RuleRef::Held(HoldRule::Queue),
        decided(Decision::AllowOnce),
        decided(Decision::AllowAlways),
        decided(Decision::Deny),
        decided(Decision::DenyAlways),
        RuleRef::Held(HoldRule::Timeout),
        RuleRef::Held(HoldRule::Limit),
        RuleRef::Approval("apr-0123abcd-42".into()),
    ];
    let mut seen = [0; 3];
    for rule in &rules {
        let bearing = rule.bearing();
        assert_eq!(Bearing::of_text(&rule.to_string()), Some(bearing), "{rule}");
        seen[bearing as usize] += 1;
    }
    // Allows: 3 policy rules, allow_cidrs, dns-bound, audit, two approvals.
    assert_eq!(seen, [8, 2, 20]);
    // What earlier versions wrote still reads.
    assert_eq!(Bearing::of_text("domain"), Some(Bearing::Allows));
}

#[test]
fn text_no_rule_writes_has_no_bearing() {
    for text in [
        "",
        "domain:",
        "domain:*",
        "transform:a..test",
        "dns-bound:",
        "dns-bound:a b",
        "budget",
        "budget:domain:",
        "budget:org",
        "http-rule:",
        "http-rule:-1",
        "http-rules:1",
        "approval:maybe",
        "approval:allow-once:x",
        "approval:apr-",
        "approval:apr-0123abcd-",
        "approval:apr-0123abcg-1",
        "approval:apr-123abcd-1",
        "approval:apr-0123abcd-1x",
        "hold-limit:1",
        "allow-all:",
        "Allow-All",
        "some-future-rule",
    ] {
        assert_eq!(Bearing::of_text(text), None, "{text:?}");
    }
}
