//! The web console in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`), both run inside the testbed's firewall namespace where
//! `palisade serve` listens, so every byte stays on that namespace's loopback.
//!
//! What a person sees is asserted: a wrong key is refused with a clear message; the right key
//! lists the sandbox the test made; its page shows the policy with `[REDACTED]` and no secret in
//! the DOM; the live egress log gains a row when curl runs inside the sandbox (one allowed, one
//! denied with its explanation) and filters by verdict and name. Screenshots of each view go to
//! `$CARGO_TARGET_TMPDIR/console/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use anyhow::bail;
use browser::{CONSOLE, Driver, WAIT, screenshots, shoot, step, text_of, until};
use common::Bed;
use fantoccini::{Client, Locator};
use serde_json::json;

const SECRET: &str = "Bearer sk-console-7e3a91c4";
const PLACEHOLDER_SECRET: &str = "sk-console-ph-55aa0f";
/// chromedriver's port inside the firewall namespace.
const DRIVER_PORT: u16 = 9515;

#[test]
fn console_in_a_real_browser() {
    let mut bed = Bed::new("console", "");
    bed.start();
    let policy = json!({
        "mode": "custom",
        "allow_domains": ["alpha.test"],
        "transforms": [{
            "domain": "api.example.test",
            "inject_headers": {"Authorization": SECRET},
            "strip_headers": ["X-Debug"],
            "http_rules": [{"action": "allow", "method": "GET", "path": "/v1/**"}],
            "placeholders": [{"placeholder": "pl-secret-0123456789abcdef",
                              "value": PLACEHOLDER_SECRET, "headers": ["X-Api-Key"]}]
        }]
    });
    let id =
        bed.create(&json!({"template_name": "system/host", "network_policy": policy}).to_string());

    // The console's own answers carry the strict headers (seen as the browser sees them).
    let head = bed
        .world
        .fw
        .command("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            CONSOLE,
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");

    // `palisade console` checks the key against the daemon, then says where to go.
    let cli = |key: &str| {
        bed.world
            .fw
            .command(common::bin())
            .arg("console")
            .env("LEAP0_BASE_URL", common::API)
            .env("LEAP0_API_KEY", key)
            .output()
            .unwrap()
    };
    let ok = cli(&bed.key);
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && said.contains(CONSOLE), "{said}");
    assert!(!said.contains(&bed.key), "the key was printed");
    let refused = cli("pl_not-a-key");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("did not accept LEAP0_API_KEY"),
        "{refused:?}"
    );

    let driver = Driver::start(&bed, DRIVER_PORT);
    let rt = bed.world.fw.runtime().unwrap();
    let out = screenshots("console");

    let c: Client = driver.client(&rt);

    // A wrong key: a clear message, nothing kept.
    let (cc, dir) = (c.clone(), out.clone());
    step(&rt, &driver, "wrong key", async move {
        cc.goto(CONSOLE).await?;
        let input = cc
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Id("login-key"))
            .await?;
        shoot(&cc, &dir, "login.png").await?;
        input.send_keys("pl_this-key-does-not-exist").await?;
        cc.find(Locator::Id("login-submit")).await?.click().await?;
        until(&cc, "the refusal", "const e = document.getElementById('login-error'); return !e.hidden && e.innerText.length > 0;", vec![]).await?;
        let msg = text_of(&cc, "#login-error").await?;
        if !msg.contains("not accepted") {
            bail!("unclear refusal: {msg:?}");
        }
        let kept = cc.execute("return sessionStorage.length", vec![]).await?;
        if kept != json!(0) {
            bail!("a refused key was kept ({kept})");
        }
        shoot(&cc, &dir, "login-refused.png").await
    });

    // The right key: the sandbox list shows the sandbox this test made.
    let (cc, dir, key, sid) = (c.clone(), out.clone(), bed.key.clone(), id.clone());
    step(&rt, &driver, "sign in and list", async move {
        let input = cc.find(Locator::Id("login-key")).await?;
        input.clear().await?;
        // Enter in the field submits: the form works from the keyboard alone.
        input.send_keys(&format!("{key}\u{E007}")).await?;
        until(&cc, "the sandbox in the list",
            "return [...document.querySelectorAll('#sandboxes-table a')].some((a) => a.innerText === arguments[0]);",
            vec![json!(sid)]).await?;
        let table = text_of(&cc, "#sandboxes-table").await?;
        let row = table
            .lines()
            .find(|l| l.contains(&sid))
            .unwrap_or_default()
            .to_owned();
        if !(row.contains("running") && row.contains("custom") && row.contains("system")) {
            bail!("row shows {row:?}");
        }
        shoot(&cc, &dir, "sandboxes.png").await
    });

    // Its page: the policy, redacted, and the live log connected.
    let (cc, sid) = (c.clone(), id.clone());
    step(&rt, &driver, "sandbox page", async move {
        cc.find(Locator::LinkText(&sid)).await?.click().await?;
        until(
            &cc,
            "the policy",
            "return document.getElementById('policy').innerText.includes('api.example.test');",
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
    let policy_text = step(&rt, &driver, "read policy", {
        let cc = c.clone();
        async move { text_of(&cc, "#policy").await }
    });
    for shown in [
        "custom",
        "alpha.test",
        "api.example.test",
        "authorization\t[REDACTED]",
        "x-debug",
        "allow\tGET\t/v1/**",
        "pl-secret-0123456789abcdef\tx-api-key\t[REDACTED]",
    ] {
        assert!(
            policy_text.contains(shown),
            "policy lacks {shown}: {policy_text}"
        );
    }

    // One allowed and one denied request from inside the sandbox; each appears in the log.
    let (code, o) = bed.exec(
        &id,
        "curl -sS -o /dev/null --connect-timeout 5 --max-time 8 http://alpha.test/",
    );
    assert_eq!(code, 0, "allowed request failed: {o}");
    let (code, _) = bed.exec(
        &id,
        "curl -sS -o /dev/null --connect-timeout 5 --max-time 8 http://beta.test/",
    );
    assert_ne!(code, 0, "denied name reached");
    let (cc, dir) = (c.clone(), out.clone());
    let rows = step(&rt, &driver, "live rows", async move {
        until(&cc, "an allowed row for alpha.test",
            "return [...document.querySelectorAll('#log-table tbody tr')].some((r) => r.innerText.includes('alpha.test') && r.innerText.includes('allowed'));",
            vec![]).await?;
        until(&cc, "a denied row for beta.test",
            "return [...document.querySelectorAll('#log-table tbody tr')].some((r) => r.innerText.includes('beta.test') && r.innerText.includes('denied'));",
            vec![]).await?;
        shoot(&cc, &dir, "sandbox.png").await?;
        browser::rows(&cc, "#log-table").await
    });
    let denied = rows
        .iter()
        .find(|r| r.contains("beta.test") && r.contains("denied"))
        .unwrap();
    assert!(
        denied.contains("Denied: the name is not in the sandbox's allowed domains"),
        "denial not explained: {denied}"
    );
    assert!(
        denied.contains("no rule in the policy allows it"),
        "{denied}"
    );

    // Filters: by verdict, then by name.
    let (cc, dir) = (c.clone(), out.clone());
    let (only_denied, only_alpha) = step(&rt, &driver, "filters", async move {
        // Keyboard: Tab moves from the verdict filter to the name filter, with a visible focus.
        cc.execute("document.getElementById('filter-verdict').focus()", vec![])
            .await?;
        cc.active_element().await?.send_keys("\u{E004}").await?;
        let focus = cc
            .execute(
                "const a = document.activeElement; \
                 return [a.id, getComputedStyle(a).outlineStyle, getComputedStyle(a).outlineWidth];",
                vec![],
            )
            .await?;
        if focus != json!(["filter-name", "solid", "3px"]) {
            bail!("focus after Tab: {focus}");
        }
        cc.find(Locator::Id("filter-verdict"))
            .await?
            .select_by_value("deny")
            .await?;
        let only_denied = browser::rows(&cc, "#log-table").await?;
        shoot(&cc, &dir, "sandbox-denied.png").await?;
        cc.find(Locator::Id("filter-verdict"))
            .await?
            .select_by_value("")
            .await?;
        cc.find(Locator::Id("filter-name"))
            .await?
            .send_keys("alpha")
            .await?;
        let only_alpha = browser::rows(&cc, "#log-table").await?;
        Ok((only_denied, only_alpha))
    });
    assert!(
        !only_denied.is_empty() && only_denied.iter().all(|r| r.contains("denied")),
        "{only_denied:?}"
    );
    assert!(
        only_denied.iter().any(|r| r.contains("beta.test")),
        "{only_denied:?}"
    );
    assert!(
        !only_alpha.is_empty() && only_alpha.iter().all(|r| r.contains("alpha.test")),
        "{only_alpha:?}"
    );

    // No secret anywhere: not in the DOM, not in the page source, not in storage or cookies;
    // the key itself only in sessionStorage, never in the address.
    let cc = c.clone();
    let (source, dom, url, cookies, stored) = step(&rt, &driver, "secrets", async move {
        let source = cc.source().await?;
        let dom = cc
            .execute("return document.documentElement.outerHTML", vec![])
            .await?;
        let url = cc.current_url().await?.to_string();
        let cookies = cc.execute("return document.cookie", vec![]).await?;
        let stored = cc
            .execute(
                "return JSON.stringify(Object.entries(sessionStorage))",
                vec![],
            )
            .await?;
        Ok((
            source,
            dom.as_str().unwrap_or("").to_owned(),
            url,
            cookies,
            stored,
        ))
    });
    for page in [&source, &dom] {
        assert!(!page.contains("sk-console"), "a secret is in the page");
        assert!(!page.contains(&bed.key), "the API key is in the page");
        assert!(page.contains("[REDACTED]"));
    }
    assert!(!url.contains(&bed.key), "{url}");
    assert_eq!(cookies, json!(""));
    assert!(stored.as_str().unwrap_or("").contains(&bed.key));
    assert!(!stored.as_str().unwrap_or("").contains("sk-console"));

    // The views still to come are in place, without fake data.
    let (cc, dir) = (c.clone(), out.clone());
    step(&rt, &driver, "approvals view", async move {
        cc.find(Locator::Css("a[data-nav=\"approvals\"]"))
            .await?
            .click()
            .await?;
        until(
            &cc,
            "the approvals view",
            "return !document.getElementById('view-approvals').hidden;",
            vec![],
        )
        .await?;
        shoot(&cc, &dir, "approvals.png").await?;
        cc.close().await?;
        Ok(())
    });
    drop(rt);
    drop(driver);
    eprintln!("console screenshots: {}", out.display());
}
