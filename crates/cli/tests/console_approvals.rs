//! The console's approvals view in a real browser (headless Chromium through chromedriver, in
//! the test world's firewall namespace): a curl inside a `hold` sandbox waits; its name shows
//! in the page live; pressing "Allow once" from the keyboard releases it. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/console/approvals-*.png`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/held.rs"]
mod held;

use std::time::Duration;

use anyhow::bail;
use browser::{CONSOLE, Driver, WAIT, screenshots, shoot, step, text_of, until};
use fantoccini::Locator;
use held::{HOLD_POLICY, background, bed_with, finished, upstream_queries};
use serde_json::json;

#[test]
fn approving_in_the_page_releases_a_held_curl() {
    let bed = bed_with("timeout = \"60s\"");
    let id = bed.create(HOLD_POLICY);
    let driver = Driver::start(&bed, 9515);
    let rt = bed.world.fw.runtime().unwrap();
    let out = screenshots("console");
    let c = driver.client(&rt);

    let (cc, key) = (c.clone(), bed.key.clone());
    step(
        &rt,
        &driver,
        "sign in, open the approvals view",
        async move {
            cc.goto(CONSOLE).await?;
            let input = cc
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Id("login-key"))
                .await?;
            input.send_keys(&format!("{key}\u{E007}")).await?;
            until(
                &cc,
                "the sandbox list",
                "return !document.getElementById('view-sandboxes').hidden;",
                vec![],
            )
            .await?;
            cc.find(Locator::Css("a[data-nav=\"approvals\"]"))
                .await?
                .click()
                .await?;
            until(
                &cc,
                "the live queue",
                "return document.getElementById('approvals-stream').innerText === 'Live';",
                vec![],
            )
            .await?;
            let empty = text_of(&cc, "#approvals-empty").await?;
            if !empty.contains("Nothing is waiting") {
                bail!("empty queue reads {empty:?}");
            }
            Ok(())
        },
    );
    step(&rt, &driver, "empty screenshot", {
        let (cc, dir) = (c.clone(), out.clone());
        async move { shoot(&cc, &dir, "approvals-empty.png").await }
    });

    // A request the policy does not list: held, and it shows up in the open page by itself.
    background(
        &bed,
        &id,
        "page",
        "curl -sS -o /dev/null -w %{http_code} --max-time 50 http://beta.test/",
    );
    let (cc, dir, sid) = (c.clone(), out.clone(), id.clone());
    let row = step(&rt, &driver, "the held name appears", async move {
        until(&cc, "a row for beta.test",
            "return [...document.querySelectorAll('#approvals-table tbody tr')].some((r) => r.innerText.includes('beta.test'));",
            vec![]).await?;
        until(
            &cc,
            "the badge",
            "return document.getElementById('approvals-badge').innerText === '1';",
            vec![],
        )
        .await?;
        shoot(&cc, &dir, "approvals.png").await?;
        let row = text_of(&cc, "#approvals-table tbody tr").await?;
        if !row.contains(&sid) || !row.contains("DNS query") {
            bail!("row shows {row:?}");
        }
        Ok(row)
    });
    assert!(
        row.contains("Allow once") && row.contains("Deny always"),
        "{row}"
    );
    assert_eq!(
        upstream_queries(&bed, "beta.test"),
        0,
        "held name leaked upstream"
    );

    // From the keyboard: Tab from the row's sandbox link to its "Allow once" button, Enter.
    let (cc, dir) = (c.clone(), out.clone());
    step(&rt, &driver, "allow once from the keyboard", async move {
        cc.execute(
            "document.querySelector('#approvals-table tbody a').focus()",
            vec![],
        )
        .await?;
        cc.active_element().await?.send_keys("\u{E004}").await?;
        let focus = cc
            .execute(
                "const a = document.activeElement; \
                 return [a.getAttribute('aria-label'), getComputedStyle(a).outlineStyle];",
                vec![],
            )
            .await?;
        if focus[0]
            .as_str()
            .is_none_or(|l| !l.starts_with("Allow once: beta.test"))
            || focus[1] != json!("solid")
        {
            bail!("focused button: {focus}");
        }
        shoot(&cc, &dir, "approvals-focus.png").await?;
        cc.active_element().await?.send_keys("\u{E007}").await?;
        until(&cc, "the decision", "return document.getElementById('approvals-decided').innerText.includes('allowed once');", vec![]).await?;
        until(
            &cc,
            "an empty queue",
            "return document.querySelectorAll('#approvals-table tbody tr').length === 0;",
            vec![],
        )
        .await?;
        // One entry per decision, though both the answer and the stream report it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let decided = cc
            .execute(
                "return document.querySelectorAll('#approvals-decided li').length",
                vec![],
            )
            .await?;
        if decided != json!(1) {
            bail!("{decided} decided entries");
        }
        let status = text_of(&cc, "#approvals-status").await?;
        if !status.contains("beta.test") {
            bail!("status reads {status:?}");
        }
        shoot(&cc, &dir, "approvals-decided.png").await?;
        cc.close().await?;
        Ok(())
    });
    let (rc, text) = finished(&bed, &id, "page", Duration::from_secs(60));
    assert_eq!((rc, text.trim()), (0, "200"), "the released curl: {text}");
    assert!(upstream_queries(&bed, "beta.test") > 0);
    drop(rt);
    drop(driver);
    eprintln!("approval screenshots: {}", out.display());
}
