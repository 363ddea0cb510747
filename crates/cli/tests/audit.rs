//! Audit → suggest → apply against a real `palisade serve` (issue 14), with curl and nc inside a
//! runc sandbox and the console in headless Chromium:
//! - a sandbox in audit mode runs a session: every request succeeds, exactly the would-be
//!   denials are recorded (none for the listed name), internal addresses stay refused;
//! - the events, the metrics counter, `palisade events`, `palisade policy show` and the console
//!   (badge, log rows, verdict filter) show it;
//! - the suggestion (API, `palisade policy suggest`, console view) allows exactly what was used;
//! - applied from the console, the same session runs enforcing with zero denials, and a new
//!   name is denied.
//!
//! Screenshots of each new view go to `$CARGO_TARGET_TMPDIR/console-audit/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::BTreeSet;

use anyhow::bail;
use browser::{CONSOLE, Driver, rows, screenshots, shoot, step, text_of, until};
use common::{Bed, addrs};
use fantoccini::Locator;
use serde_json::{Value, json};

/// What the "agent" does: TLS passthrough, plain HTTP, three siblings under one domain, and a
/// name-less TCP protocol. Every line prints `ok NAME` or `FAIL NAME`.
fn session() -> String {
    let tcp = addrs::TCP_V4;
    [
        "c() { if curl -sS -o /dev/null --connect-timeout 5 --max-time 8 \"$@\"; then echo \"ok $*\"; else echo \"FAIL $*\"; fi; }",
        "c http://alpha.test/",
        "c -k https://beta.test/",
        "c http://echo.test/hello",
        "c http://a.wild.test/",
        "c http://b.wild.test/",
        "c http://c.wild.test/",
        &format!(
            "if [ \"$(printf ping | nc -N -w 3 {tcp} 7)\" = ping ]; then echo 'ok nc'; else echo 'FAIL nc'; fi"
        ),
    ]
    .join("\n")
}

fn cli(bed: &Bed, args: &[&str]) -> (bool, String) {
    let out = bed
        .world
        .fw
        .command(common::bin())
        .args(args)
        .env("LEAP0_BASE_URL", common::API)
        .env("LEAP0_API_KEY", &bed.key)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn events(bed: &Bed, id: &str, query: &str) -> Vec<Value> {
    let r = bed.api(
        "GET",
        &format!("/v1/sandbox/{id}/network/events?limit=1000{query}"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().cloned().unwrap_or_default()
}

fn render(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| {
            format!(
                "{} {} {} {}:{} {} {}",
                e["verdict"],
                e["protocol"],
                e["name"],
                e["dst_addr"],
                e["dst_port"],
                e["rule"],
                e["reason"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn audit_suggest_apply_in_the_api_the_cli_and_the_console() {
    let mut bed = Bed::new("audit", "");
    // Three siblings under one registrable domain (the default zone has x.wild.test only).
    for name in ["a.wild.test", "b.wild.test", "c.wild.test"] {
        bed.world.dns().set_a(name, &[addrs::GOOD_V4]);
    }
    bed.start();

    // Validation: audit makes sense with custom only, and says so with the field.
    let r = bed.api(
        "POST",
        "/v1/sandbox",
        &json!({"template_name": "system/host",
                "network_policy": {"mode": "allow-all", "audit": true}})
        .to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.fields(), ["network_policy.audit"], "{}", r.body);

    let policy = json!({"mode": "custom", "allow_domains": ["alpha.test"], "audit": true});
    let r = bed.api(
        "POST",
        "/v1/sandbox",
        &json!({"template_name": "system/host", "network_policy": policy}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["network_policy"]["audit"],
        json!(true),
        "{}",
        r.body
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let got = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    assert_eq!(got.json()["network_policy"]["audit"], json!(true));

    // The session under audit: everything goes through.
    let (code, out) = bed.exec(&id, &session());
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("FAIL"),
        "audit mode refused something:\n{out}"
    );
    // Internal addresses stay refused in audit mode.
    let (_, out) = bed.exec(
        &id,
        &format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 8 http://{}/",
            addrs::PRIVATE_V4
        ),
    );
    assert_eq!(out.trim(), "403", "{out}");
    bed.world.assert_untouched("private");

    // Exactly the would-be denials, and nothing for the listed name.
    let all = events(&bed, &id, "");
    let would = events(&bed, &id, "&verdict=would-deny");
    let names: BTreeSet<&str> = would.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "a.wild.test",
            "b.wild.test",
            "beta.test",
            "c.wild.test",
            "echo.test"
        ]),
        "{}",
        render(&all)
    );
    assert!(
        would
            .iter()
            .any(|e| e["name"].is_null() && e["dst_addr"] == json!(addrs::TCP_V4.to_string())),
        "{}",
        render(&all)
    );
    assert!(
        all.iter()
            .filter(|e| e["name"] == json!("alpha.test"))
            .all(|e| e["verdict"] == json!("allow")),
        "{}",
        render(&all)
    );
    let denied: Vec<&Value> = all
        .iter()
        .filter(|e| e["verdict"] == json!("deny"))
        .collect();
    assert!(
        !denied.is_empty()
            && denied
                .iter()
                .all(|e| e["dst_addr"] == json!(addrs::PRIVATE_V4.to_string())),
        "{}",
        render(&all)
    );

    // The metrics counter (admin listener, loopback of the firewall namespace).
    let metrics = bed
        .world
        .fw
        .command("curl")
        .args(["-sS", "--max-time", "10", "http://127.0.0.1:9090/metrics"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("palisade_egress_events_total{verdict=\"would-deny\"}"))
        .unwrap_or_else(|| panic!("no would-deny counter:\n{metrics}"));
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= would.len() as u64, "{line} vs {}", would.len());

    // The CLI: events, policy show, suggest (table and JSON).
    let (ok, out) = cli(&bed, &["events", &id, "--verdict", "would-deny"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("would-deny") && out.contains("beta.test"),
        "{out}"
    );
    assert!(!out.contains("alpha.test"), "{out}");
    let (ok, out) = cli(&bed, &["policy", "show", &id]);
    assert!(ok && out.contains("audit mode: on"), "{out}");
    let (ok, table) = cli(&bed, &["policy", "suggest", &id]);
    assert!(ok, "{table}");
    let wild = table
        .lines()
        .find(|l| l.starts_with("*.wild.test"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        wild.contains("a.wild.test, b.wild.test, c.wild.test"),
        "{table}"
    );
    assert!(wild.contains(" 80"), "ports shown: {table}");
    assert!(
        table.lines().any(|l| l.starts_with("198.51.100.30/32")),
        "{table}"
    );
    assert!(
        table.contains(&addrs::PRIVATE_V4.to_string()),
        "internal address explained: {table}"
    );
    let (ok, raw) = cli(&bed, &["--json", "policy", "suggest", &id]);
    assert!(ok, "{raw}");
    let suggestion: Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(
        suggestion["network_policy"],
        json!({"mode": "custom",
               "allow_domains": ["alpha.test", "beta.test", "echo.test", "*.wild.test"],
               "allow_cidrs": [format!("{}/32", addrs::TCP_V4)]}),
        "{raw}"
    );

    // A snapshot keeps the audit flag with the policy.
    let snap = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        r#"{"name":"audit-snap"}"#,
    );
    assert!(snap.status == 200 || snap.status == 201, "{}", snap.body);
    assert_eq!(
        snap.json()["network_policy"]["audit"],
        json!(true),
        "{}",
        snap.body
    );

    // `--apply --keep-audit`: the lists in force, audit still on.
    let (ok, out) = cli(&bed, &["policy", "suggest", &id, "--apply", "--keep-audit"]);
    assert!(ok && out.contains("audit mode still on"), "{out}");
    let got = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    assert_eq!(
        got.json()["network_policy"]["audit"],
        json!(true),
        "{}",
        got.body
    );
    assert_eq!(
        got.json()["network_policy"]["allow_domains"],
        suggestion["network_policy"]["allow_domains"]
    );

    // The console: badge, would-deny rows and filter, the suggestion view, Apply.
    let driver = Driver::start(&bed, 9516);
    let rt = bed.world.fw.runtime().unwrap();
    let shots = screenshots("console-audit");
    let c = driver.client(&rt);
    let (cc, key, sid) = (c.clone(), bed.key.clone(), id.clone());
    step(&rt, &driver, "sign in and open the sandbox", async move {
        cc.goto(&format!("{CONSOLE}#/sandbox/{sid}")).await?;
        let input = cc
            .wait()
            .at_most(browser::WAIT)
            .for_element(Locator::Id("login-key"))
            .await?;
        input.send_keys(&format!("{key}\u{E007}")).await?;
        until(
            &cc,
            "the audit badge",
            "return !document.getElementById('sandbox-audit').hidden;",
            vec![],
        )
        .await?;
        until(
            &cc,
            "the live stream",
            "return document.getElementById('log-stream').innerText === 'Live';",
            vec![],
        )
        .await?;
        Ok(())
    });
    let (cc, dir) = (c.clone(), shots.clone());
    let (badge, note, would_rows, filtered) = step(&rt, &driver, "audit in the log", async move {
        until(&cc, "a would-deny row for beta.test",
            "return [...document.querySelectorAll('#log-table tbody tr')].some((r) => r.innerText.includes('beta.test') && r.innerText.includes('would deny'));",
            vec![]).await?;
        let badge = text_of(&cc, "#sandbox-audit").await?;
        let note = text_of(&cc, "#policy-audit").await?;
        let all = rows(&cc, "#log-table").await?;
        shoot(&cc, &dir, "sandbox-audit.png").await?;
        cc.find(Locator::Id("filter-verdict"))
            .await?
            .select_by_value("would-deny")
            .await?;
        let filtered = rows(&cc, "#log-table").await?;
        shoot(&cc, &dir, "sandbox-would-deny.png").await?;
        cc.find(Locator::Id("filter-verdict"))
            .await?
            .select_by_value("")
            .await?;
        Ok((badge, note, all, filtered))
    });
    assert_eq!(badge, "Audit mode");
    assert!(note.contains("let through"), "{note}");
    let beta = would_rows
        .iter()
        .find(|r| r.contains("beta.test") && r.contains("would deny"))
        .unwrap();
    assert!(
        beta.contains("Would be denied, let through by audit mode: the name is not in the sandbox's allowed domains"),
        "{beta}"
    );
    assert!(
        !filtered.is_empty() && filtered.iter().all(|r| r.contains("would deny")),
        "{filtered:?}"
    );
    assert!(
        !filtered.iter().any(|r| r.contains("alpha.test")),
        "{filtered:?}"
    );

    let (cc, dir) = (c.clone(), shots.clone());
    let (summary, entries, result, nav) = step(
        &rt,
        &driver,
        "suggestions view and apply",
        async move {
            cc.find(Locator::Id("sandbox-suggest"))
                .await?
                .click()
                .await?;
            until(
                &cc,
                "the suggestion table",
                "return !!document.getElementById('suggestion-table');",
                vec![],
            )
            .await?;
            let nav = text_of(&cc, "a[data-nav=\"suggestions\"]").await?;
            let summary = text_of(&cc, "#suggestion-summary").await?;
            let entries = rows(&cc, "#suggestion-table").await?;
            shoot(&cc, &dir, "suggestions.png").await?;
            // Keyboard: the Apply button is reachable and labelled.
            let label = text_of(&cc, "#suggestions-apply-button").await?;
            if label != "Apply this policy" {
                bail!("apply button says {label:?}");
            }
            cc.find(Locator::Id("suggestions-apply-button"))
                .await?
                .click()
                .await?;
            until(&cc, "the applied message", "return document.getElementById('suggestions-result').innerText.startsWith('Applied');", vec![]).await?;
            let result = text_of(&cc, "#suggestions-result").await?;
            shoot(&cc, &dir, "suggestions-applied.png").await?;
            cc.close().await?;
            Ok((summary, entries, result, nav))
        },
    );
    assert_eq!(nav, "Suggestions");
    assert!(
        summary.contains("4 domains") && summary.contains("1 network"),
        "{summary}"
    );
    let wild = entries
        .iter()
        .find(|r| r.starts_with("*.wild.test"))
        .unwrap();
    assert!(
        wild.contains("wildcard domain") && wild.contains("a.wild.test, b.wild.test, c.wild.test"),
        "{wild}"
    );
    // Applied once already with --keep-audit: the address is now the policy's own network.
    assert!(
        entries
            .iter()
            .any(|r| r.starts_with("198.51.100.30/32") && r.contains("network (kept)")),
        "{entries:?}"
    );
    assert!(result.contains("audit mode off"), "{result}");
    drop(rt);
    drop(driver);

    let got = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    assert!(
        got.json()["network_policy"].get("audit").is_none(),
        "{}",
        got.body
    );

    // Enforcing now: the same session runs with zero denials, and a new name is denied.
    let before = all_ids_max(&bed, &id);
    let (code, out) = bed.exec(&id, &session());
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("FAIL"),
        "the suggested policy refused part of the session:\n{out}"
    );
    let (code, _) = bed.exec(
        &id,
        "curl -sS -o /dev/null --connect-timeout 5 --max-time 8 http://api.example.test/",
    );
    assert_ne!(code, 0, "a name outside the suggestion was reached");
    let after: Vec<Value> = events(&bed, &id, &format!("&after={before}"));
    let (new_name, rest): (Vec<&Value>, Vec<&Value>) = after
        .iter()
        .partition(|e| e["name"] == json!("api.example.test"));
    assert!(
        rest.iter().all(|e| e["verdict"] == json!("allow")),
        "a denial while replaying the session:\n{}",
        render(&after)
    );
    assert!(
        !new_name.is_empty() && new_name.iter().all(|e| e["verdict"] == json!("deny")),
        "{}",
        render(&after)
    );
    eprintln!("console screenshots: {}", shots.display());
}

/// The newest event id of the sandbox (0 when none).
fn all_ids_max(bed: &Bed, id: &str) -> i64 {
    events(bed, id, "")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .max()
        .unwrap_or(0)
}
