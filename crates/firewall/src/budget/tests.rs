use super::*;
use palisade_policy::Policy;

fn budgets(json: &str) -> Budgets {
    let p = Policy::from_json(format!(r#"{{"mode":"allow-all","budgets":{json}}}"#).as_bytes())
        .unwrap();
    p.budgets().clone()
}

fn name(s: &str) -> CanonicalName {
    palisade_policy::canonicalize(s.as_bytes()).unwrap()
}

#[test]
fn a_batch_past_the_limit_cuts_and_later_connections_are_refused_not_cut() {
    let m = Meters::empty().update(&budgets(
        r#"{"sandbox":{"sent_bytes":100,"window_secs":3600}}"#,
    ));
    let open = m.tally(None).unwrap();
    let other = m.tally(None).unwrap();
    assert!(open.charge(Dir::Sent, 60).is_ok());
    assert!(
        open.charge(Dir::Sent, 40).is_ok(),
        "exactly the budget is allowed"
    );
    let cut = open.charge(Dir::Sent, 1).unwrap_err();
    assert_eq!(cut.rule.to_string(), "budget:sandbox");
    assert!(cut.reason.contains("sent 101 of 100 bytes"), "{cut}");
    assert_eq!(open.cut_reason(), Some(cut));
    // Another connection open at the time is cut on its next byte, either way.
    assert!(other.charge(Dir::Received, 1).is_err());
    // A connection opened now is refused (the HTTP paths answer 403) but not cut on sight.
    let late = m.tally(None).unwrap();
    assert!(late.exhausted().is_some());
    assert!(late.charge(Dir::Sent, 10).is_ok());
}

#[test]
fn the_signal_closes_open_connections() {
    let m = Meters::empty().update(&budgets(
        r#"{"domains":[{"domain":"a.test","received_bytes":10,"window_secs":60}]}"#,
    ));
    let idle = m.tally(Some(&name("a.test"))).unwrap();
    let busy = m.tally(Some(&name("a.test"))).unwrap();
    assert!(
        m.tally(Some(&name("b.test"))).is_none(),
        "no meter, no tally"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(busy.charge(Dir::Received, 11).is_err());
        let cut = tokio::time::timeout(std::time::Duration::from_secs(1), idle.closed())
            .await
            .expect("the idle connection is told");
        assert_eq!(cut.rule.to_string(), "budget:domain:a.test");
    });
}

#[test]
fn refunds_and_policy_updates_keep_the_counts() {
    let m = Meters::empty().update(&budgets(
        r#"{"sandbox":{"sent_bytes":100,"received_bytes":100,"window_secs":3600}}"#,
    ));
    let t = m.tally(None).unwrap();
    t.charge(Dir::Received, 90).unwrap();
    t.refund(Dir::Received, 50);
    t.charge(Dir::Received, 60).unwrap();
    // The same budget with a higher limit keeps its count (100 of 150).
    let m2 = m.update(&budgets(
        r#"{"sandbox":{"sent_bytes":100,"received_bytes":150,"window_secs":3600}}"#,
    ));
    let t2 = m2.tally(None).unwrap();
    assert!(t2.charge(Dir::Received, 50).is_ok());
    assert!(t2.charge(Dir::Received, 1).is_err());
    // Lowering a limit below the count spends the budget: open connections are cut.
    let m3 = Meters::empty().update(&budgets(
        r#"{"sandbox":{"sent_bytes":100,"window_secs":3600}}"#,
    ));
    let open = m3.tally(None).unwrap();
    open.charge(Dir::Sent, 50).unwrap();
    let m4 = m3.update(&budgets(
        r#"{"sandbox":{"sent_bytes":10,"window_secs":3600}}"#,
    ));
    assert!(open.charge(Dir::Sent, 1).is_err());
    assert!(m4.tally(None).unwrap().exhausted().is_some());
    // A budget taken out of the policy no longer limits connections that still hold it.
    let m5 = m4.update(&Budgets::default());
    assert!(m5.tally(None).is_none());
    assert!(m5.switchable_tally().is_none());
    let held = m4.tally(None).unwrap();
    assert!(held.exhausted().is_none());
}

#[test]
fn a_new_window_starts_from_zero() {
    let m = Meters::empty().update(&budgets(r#"{"sandbox":{"sent_bytes":10,"window_secs":1}}"#));
    let t = m.tally(None).unwrap();
    assert!(t.charge(Dir::Sent, 11).is_err());
    assert!(m.tally(None).unwrap().exhausted().is_some());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let fresh = m.tally(None).unwrap();
    assert!(fresh.exhausted().is_none());
    assert!(fresh.charge(Dir::Sent, 10).is_ok());
}

#[test]
fn plain_http_switches_the_domain_meter_per_request() {
    let m = Meters::empty().update(&budgets(
        r#"{"domains":[{"domain":"*.a.test","sent_bytes":5,"window_secs":60}]}"#,
    ));
    let t = m.switchable_tally().unwrap();
    assert!(t.charge(Dir::Sent, 100).is_ok(), "no meter yet");
    t.set_domain(m.domain(&name("x.a.test")));
    assert!(t.charge(Dir::Sent, 6).is_err());
    t.set_domain(m.domain(&name("b.test")));
    assert!(t.exhausted().is_none());
}
