//! Headless Chromium through chromedriver (WebDriver, `fantoccini`) in the test world's firewall
//! namespace, for browser tests of the console beside `palisade serve` (console.rs,
//! console_approvals.rs, audit.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    reason = "a harness that cannot build its world is a failed test"
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::common::Bed;

/// Every browser step is bounded; a hang is a failure, not a stuck test.
pub const STEP: Duration = Duration::from_secs(60);
pub const WAIT: Duration = Duration::from_secs(30);
pub const CONSOLE: &str = "http://127.0.0.1:8080/console/";

/// chromedriver (and the Chromium it starts) in the world's firewall namespace, in a process
/// group of its own so that dropping it ends every browser process it made, and nothing else.
pub struct Driver {
    child: Child,
    log: PathBuf,
    profile: tempfile::TempDir,
    port: u16,
}

impl Driver {
    pub fn start(bed: &Bed, port: u16) -> Driver {
        use std::os::unix::process::CommandExt;
        for tool in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} missing: run `make apt` (Debian packages chromium, chromium-driver)"
            );
        }
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let child = bed
            .world
            .fw
            .command("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Driver {
            child,
            log,
            profile,
            port,
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or("").to_owned()
    }

    /// A WebDriver session on a fresh headless Chromium (bounded wait for chromedriver).
    pub fn client(&self, rt: &tokio::runtime::Runtime) -> Client {
        let port = self.port;
        let profile = self.profile.path().join("profile");
        step(rt, self, "start chromium", async move {
            let deadline = Instant::now() + WAIT;
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                if Instant::now() > deadline {
                    bail!("chromedriver did not listen on {port}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let caps = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-proxy-server",
                        "--disable-dev-shm-usage", "--window-size=1280,1200",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            });
            let Value::Object(caps) = caps else {
                bail!("capabilities")
            };
            let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await?;
            Ok(c)
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// Runs one browser step on the namespace runtime (its sockets live in the firewall namespace),
/// bounded by [`STEP`].
pub fn step<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    driver: &Driver,
    what: &str,
    f: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> T {
    match rt.block_on(rt.spawn(async move { tokio::time::timeout(STEP, f).await })) {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e))) => panic!("{what}: {e:#}\nchromedriver log:\n{}", driver.log_tail()),
        Ok(Err(_)) => panic!("{what}: no answer within {STEP:?}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Polls `script` (returning a boolean) until it is true, bounded by [`WAIT`].
pub async fn until(c: &Client, what: &str, script: &str, args: Vec<Value>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c.execute(script, args.clone()).await?;
        if v.as_bool() == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let seen = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            bail!("timed out waiting for {what}; the page shows:\n{seen}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text a person sees in the first element matching `css` (empty when none).
pub async fn text_of(c: &Client, css: &str) -> anyhow::Result<String> {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            vec![json!(css)],
        )
        .await?;
    Ok(v.as_str().unwrap_or("").to_owned())
}

/// The visible rows of a table body, as a person reads them.
pub async fn rows(c: &Client, table_css: &str) -> anyhow::Result<Vec<String>> {
    let v = c
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
               .filter((r) => !r.hidden).map((r) => r.innerText);",
            vec![json!(table_css)],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

pub async fn shoot(c: &Client, dir: &Path, name: &str) -> anyhow::Result<()> {
    let png = c.screenshot().await?;
    std::fs::write(dir.join(name), png).with_context(|| format!("writing {name}"))
}

/// `$CARGO_TARGET_TMPDIR/<sub>/`, made if missing.
pub fn screenshots(sub: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
