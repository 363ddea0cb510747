//! Scenario 4e: interception with header injection through an explicit (CONNECT) proxy.
//! hudsucker cannot be reached transparently, and wrk cannot use a proxy, so this comparison has
//! its own client, oha, for every row: direct HTTPS (no proxy), Palisade (transparent, no
//! proxy) and hudsucker (`oha -x`). hudsucker runs as `hudsucker_peer` (bench/src/bin) in `fw`
//! pinned to the proxy CPU, signing its leaves with the measured sandbox's CA and verifying the
//! upstream against the testbed CA. Every path is first checked to really inject (or, direct,
//! not inject) the header.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::bed::{FW_THREAD, HOST, IBed, PROXY_CPU, SECRET};
use super::load::{OHA, curl, in_ns, proc_cpu_secs, proc_rss_mib};
use super::{Comparison, Sample, interleave, rows};
use crate::measure::thread_cpu_secs;

const PORT: u16 = 18447;
const SECS: u32 = 3;
const CONNS: u32 = 16;
/// This comparison's own bound (it also stops at the scenarios' common deadline).
const LIMIT: Duration = Duration::from_secs(90);

/// The running `hudsucker_peer`, killed on drop.
#[derive(Debug)]
struct Hud {
    child: Child,
    /// `http://<gateway>:<port>`, what the direct namespace's client uses as its proxy.
    url: String,
}

impl Hud {
    fn start(bed: &IBed) -> Result<Hud> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let bin = exe.with_file_name("hudsucker_peer");
        if !bin.exists() {
            bail!(
                "{} is missing (cargo build --release -p palisade-bench builds it)",
                bin.display()
            );
        }
        let gateway = bed.direct.gateway;
        let log = std::fs::File::create(bed.path("hudsucker.log"))?;
        let child = bed
            .world
            .fw
            .command("taskset")
            .args(["-c", &PROXY_CPU.to_string()])
            .arg(&bin)
            .arg("--listen")
            .arg(format!("{gateway}:{PORT}"))
            .arg("--ca-cert")
            .arg(bed.path("ca.pem"))
            .arg("--ca-key")
            .arg(bed.path("ca.key"))
            .arg("--upstream-ca")
            .arg(bed.path("upstream-ca.pem"))
            .args(["--upstream", &palisade_testbed::addrs::GOOD_V4.to_string()])
            .args(["--host", HOST])
            .env("BENCH_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .current_dir(bed.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting hudsucker_peer")?;
        let mut hud = Hud {
            child,
            url: format!("http://{gateway}:{PORT}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = bed
                .world
                .fw
                .run("ss", ["-Htln", &format!("sport = :{PORT}")])?;
            if !out.stdout.is_empty() {
                return Ok(hud);
            }
            if let Err(e) = hud.check_alive() {
                let log = std::fs::read_to_string(bed.path("hudsucker.log")).unwrap_or_default();
                bail!("{e:#}: {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("hudsucker_peer did not listen on port {PORT} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("hudsucker_peer exited ({status})");
        }
        Ok(())
    }
}

impl Drop for Hud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one oha saturation run reports.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    requests: f64,
}

/// `oha -c 16 -z secs -w` (keep-alive, HTTP/1.1) in `ns`, through `proxy` if given. Every
/// request must succeed with 200.
fn oha_saturate(ns: &str, url: &str, ca: &str, proxy: Option<&str>, secs: u32) -> Result<Run> {
    let mut cmd = in_ns(ns, secs + 15, OHA);
    cmd.args(["--no-tui", "--output-format", "json", "-w"])
        .args(["--worker-threads", "1", "-c", &CONNS.to_string()])
        .args(["-z", &format!("{secs}s"), "--cacert", ca, "-t", "5s"]);
    if let Some(p) = proxy {
        cmd.args(["-x", p]);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .context("running oha (make bench-deps builds it)")?;
    if !out.status.success() {
        bail!(
            "oha failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_oha(&String::from_utf8_lossy(&out.stdout))
}

fn parse_oha(out: &str) -> Result<Run> {
    let json: serde_json::Value = serde_json::from_str(out).context("oha JSON")?;
    let success = json["summary"]["successRate"].as_f64().unwrap_or(0.0);
    if success < 1.0 {
        bail!("oha: success rate {success}: {}", json["errorDistribution"]);
    }
    let codes = json["statusCodeDistribution"]
        .as_object()
        .context("oha JSON lacks statusCodeDistribution")?;
    let mut requests = 0.0;
    for (code, n) in codes {
        let n = n.as_f64().unwrap_or(0.0);
        if code != "200" && n > 0.0 {
            bail!("oha: {n} responses with status {code}");
        }
        requests += n;
    }
    let rps = json["summary"]["requestsPerSec"]
        .as_f64()
        .context("oha JSON lacks requestsPerSec")?;
    if requests <= 0.0 {
        bail!("oha made no request");
    }
    Ok(Run { rps, requests })
}

/// One path of this comparison.
enum Via {
    Direct,
    Palisade,
    Hud,
}

struct Row {
    name: &'static str,
    via: Via,
}

impl Row {
    fn netns<'b>(&self, bed: &'b IBed) -> &'b str {
        match self.via {
            Via::Palisade => bed.sandbox_netns(),
            Via::Direct | Via::Hud => bed.direct.netns.name(),
        }
    }
}

/// The digests of the Authorization values the upstream saw for one request on this path.
fn seen_authorization(bed: &IBed, row: &Row, hud: &Hud) -> Result<Vec<String>> {
    // Through hudsucker the client trusts only the sandbox CA: the leaf must be hudsucker's.
    let (ca, proxy) = match row.via {
        Via::Hud => ("ca.pem", vec!["--proxy", hud.url.as_str()]),
        Via::Direct | Via::Palisade => ("clients-ca.pem", Vec::new()),
    };
    let ca = bed.path(ca).display().to_string();
    let mut extra = vec!["--http1.1", "-H", "Authorization: from-the-sandbox"];
    extra.extend(proxy);
    let body = curl(row.netns(bed), &format!("https://{HOST}/"), &ca, &extra)
        .with_context(|| format!("{}: one request", row.name))?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{}: echo JSON: {body}", row.name))?;
    // Digests: Palisade scrubs the injected value from the echo the client reads.
    Ok(json["header_sha256"]["authorization"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let deadline = deadline.min(Instant::now() + LIMIT);
    bed.redirect_https(None)?;
    let mut hud = Hud::start(bed)?;
    let configs = [
        Row {
            name: "direct HTTPS (oha, no proxy)",
            via: Via::Direct,
        },
        Row {
            name: "Palisade (oha, transform policy, transparent, no proxy)",
            via: Via::Palisade,
        },
        Row {
            name: "hudsucker 0.25 explicit proxy, HttpHandler sets Authorization (oha -x)",
            via: Via::Hud,
        },
    ];
    for row in &configs {
        let want = match row.via {
            Via::Direct => "from-the-sandbox",
            Via::Palisade | Via::Hud => SECRET,
        };
        let seen = seen_authorization(bed, row, &hud)?;
        if seen != [palisade_testbed::sha256_hex(want.as_bytes())] {
            bail!("{}: upstream saw Authorization {seen:?}", row.name);
        }
    }
    let url = format!("https://{HOST}/");
    let ca = bed.path("clients-ca.pem").display().to_string();
    let proxy_url = hud.url.clone();
    let samples = interleave(configs.len(), reps, deadline, |i, warm| {
        let row = &configs[i];
        let cpu_now = |hud: &mut Hud| -> Result<Option<f64>> {
            Ok(match row.via {
                Via::Direct => None,
                Via::Palisade => Some(thread_cpu_secs(FW_THREAD)?),
                Via::Hud => {
                    hud.check_alive()?;
                    Some(proc_cpu_secs(hud.child.id())?)
                }
            })
        };
        let cpu0 = cpu_now(&mut hud)?;
        let proxy = matches!(row.via, Via::Hud).then_some(proxy_url.as_str());
        let r = oha_saturate(
            row.netns(bed),
            &url,
            &ca,
            proxy,
            if warm { 1 } else { SECS },
        )
        .with_context(|| row.name)?;
        let cpu = match (cpu0, cpu_now(&mut hud)?) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / r.requests),
            _ => None,
        };
        tracing::info!(
            config = row.name,
            rps = r.rps,
            ?cpu,
            "explicit-proxy keep-alive"
        );
        Ok(Sample {
            value: r.rps,
            cpu,
            rss_mib: match row.via {
                Via::Hud => proc_rss_mib(hud.child.id()),
                Via::Direct | Via::Palisade => None,
            },
        })
    })?;
    let names: Vec<String> = configs.iter().map(|c| c.name.to_owned()).collect();
    let table = rows(&names, &samples, "CPU-µs/req");
    let mut notes = vec![
        format!(
            "client: oha -c {CONNS} --worker-threads 1 -z {SECS}s -w (HTTP/1.1 keep-alive, small \
             echo response) on CPU 1, for every row (wrk cannot use a proxy); a 1 s warm-up per \
             row, then {reps} interleaved runs; numbers are comparable within this table, not \
             with 4a's wrk rows"
        ),
        format!(
            "hudsucker: bench/src/bin/hudsucker_peer.rs, one tokio worker, pinned to CPU \
             {PROXY_CPU} like Palisade's runtime ({} worker(s)); leaves from RcgenAuthority with \
             the measured sandbox's CA (leaf key = CA key, cached), upstream verified against \
             the testbed CA only, upstream connections pooled by hudsucker's hyper client; the \
             client reaches it with CONNECT at the direct namespace's gateway",
            bed.workers
        ),
        "checked before load: the upstream saw exactly the injected secret through Palisade \
         and hudsucker (the client's own value removed), and the client's value directly"
            .to_owned(),
    ];
    if let (Some(p), Some(h)) = (table.get(1), table.get(2)) {
        notes.push(format!(
            "Palisade / hudsucker: {:.2}×",
            p.value.median / h.value.median
        ));
    }
    Ok(vec![Comparison {
        scenario: "4e. interception + header injection through an explicit proxy (oha \
                   saturation, keep-alive)"
            .into(),
        unit: "req/s".into(),
        goal: "Palisade (transparent) >= hudsucker (explicit) on the same client".into(),
        rows: table,
        notes,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oha_report_parsed_and_failures_refused() {
        let ok = r#"{"summary":{"successRate":1.0,"requestsPerSec":4000.5},
                     "statusCodeDistribution":{"200":12000},"errorDistribution":{}}"#;
        let r = parse_oha(ok).unwrap();
        assert_eq!((r.rps, r.requests), (4000.5, 12000.0));
        let errors = r#"{"summary":{"successRate":0.9,"requestsPerSec":4000.5},
                         "statusCodeDistribution":{"200":9},"errorDistribution":{"x":1}}"#;
        assert!(parse_oha(errors).is_err());
        let bad_status = r#"{"summary":{"successRate":1.0,"requestsPerSec":40.0},
                             "statusCodeDistribution":{"200":9,"502":1}}"#;
        assert!(parse_oha(bad_status).is_err());
        assert!(
            parse_oha(
                r#"{"summary":{"successRate":1.0,"requestsPerSec":0.0},
                             "statusCodeDistribution":{}}"#
            )
            .is_err()
        );
        assert!(parse_oha("garbage").is_err());
    }
}
