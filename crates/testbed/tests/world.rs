//! Privileged tests of the test world itself (run as root): topology, servers, logs, teardown.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs::*;
use palisade_testbed::{Kind, LogEntry, Netns, Transport, World};
use serde_json::Value;

/// Runs a client in `ns`, failing with its stderr unless it exits 0.
fn ok(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out: Output = ns.run(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn curl_json(ns: &Netns, args: &[&str]) -> Result<Value> {
    let mut all = vec!["-sS", "--fail", "-m", "10"];
    all.extend_from_slice(args);
    let body = ok(ns, "curl", &all)?;
    serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))
}

fn netns_list() -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_netns(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn world_starts_and_tears_down() -> Result<()> {
    let world = World::new()?;
    let (fw, net) = (world.fw.name().to_owned(), world.net.name().to_owned());
    let list = netns_list()?;
    assert!(has_netns(&list, &fw) && has_netns(&list, &net), "{list}");
    assert!(world.test_ca_path().exists());
    let ca_path = world.test_ca_path().to_owned();
    drop(world);
    let list = netns_list()?;
    assert!(
        !has_netns(&list, &fw) && !has_netns(&list, &net),
        "left behind: {list}"
    );
    assert!(!std::path::Path::new("/etc/netns").join(&fw).exists());
    assert!(!ca_path.exists());
    Ok(())
}

#[test]
fn teardown_happens_on_panic() -> Result<()> {
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let names2 = std::sync::Arc::clone(&names);
    let result = std::thread::spawn(move || -> Result<()> {
        let world = World::new()?;
        if let Ok(mut n) = names2.lock() {
            n.push(world.fw.name().to_owned());
            n.push(world.net.name().to_owned());
        }
        let _keep = &world;
        panic!("a test fails while the world is up");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let list = netns_list()?;
    let names = names
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(names.len(), 2);
    for n in names {
        assert!(!has_netns(&list, &n), "{n} left behind after panic: {list}");
    }
    Ok(())
}

#[test]
fn https_http1_and_h2_from_fw_with_sni_and_headers() -> Result<()> {
    let world = World::new()?;
    let ca = world.test_ca_path().to_string_lossy().into_owned();
    let resolve = format!("alpha.test:443:{GOOD_V4}");
    let j = curl_json(
        &world.fw,
        &[
            "--http1.1",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            "X-Dup: one",
            "-H",
            "X-Dup: two",
            "-H",
            "Authorization: Bearer sandbox-token",
            "https://alpha.test/some/path?q=1",
        ],
    )?;
    assert_eq!(j["server"], "good");
    assert_eq!(j["sni"], "alpha.test");
    assert_eq!(j["host"], "alpha.test");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["path"], "/some/path");
    assert_eq!(j["query"], "q=1");
    assert_eq!(j["header_map"]["x-dup"], serde_json::json!(["one", "two"]));
    assert_eq!(
        j["header_map"]["authorization"],
        serde_json::json!(["Bearer sandbox-token"])
    );
    let names: Vec<&str> = j["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h[0].as_str())
        .collect();
    assert!(names.contains(&"user-agent") && names.iter().filter(|n| **n == "x-dup").count() == 2);

    let h2 = curl_json(
        &world.fw,
        &[
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "https://alpha.test/",
        ],
    )?;
    assert_eq!(h2["version"], "HTTP/2.0");
    assert_eq!(h2["sni"], "alpha.test");
    assert_eq!(h2["host"], "alpha.test");

    // A name under the wildcard, two labels deep, also gets a valid certificate.
    let deep = format!("a.b.wild.test:443:{GOOD_V4}");
    let w = curl_json(
        &world.fw,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &deep,
            "https://a.b.wild.test/",
        ],
    )?;
    assert_eq!(w["sni"], "a.b.wild.test");

    let good = world.log().for_server("good");
    let snis: Vec<&str> = good
        .iter()
        .filter(|e| e.kind == Kind::TlsSni)
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        snis.iter()
            .any(|d| d.starts_with("sni=alpha.test ") && d.contains("h2")),
        "{snis:?}"
    );
    assert_eq!(
        good.iter().filter(|e| e.kind == Kind::HttpRequest).count(),
        3
    );
    assert!(
        good.iter()
            .any(|e| e.kind == Kind::HttpRequest && e.detail.contains("x-dup: two"))
    );
    world.assert_untouched("attacker");
    Ok(())
}

#[test]
fn unknown_sni_fails_but_is_logged_by_the_attacker() -> Result<()> {
    let world = World::new()?;
    let ca = world.test_ca_path().to_string_lossy().into_owned();
    let resolve = format!("unknown.test:443:{ATTACKER_V4}");
    let out = world.fw.run(
        "curl",
        [
            "-sS",
            "-m",
            "10",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "https://unknown.test/",
        ],
    )?;
    assert!(!out.status.success());
    assert!(!world.log().is_untouched("attacker"));
    assert!(world.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| e.detail.contains("sni=unknown.test"))
    }));
    Ok(())
}

#[test]
fn dns_answers_from_fw_and_logs_every_query() -> Result<()> {
    let world = World::new()?;
    let dig = |args: &[&str]| -> Result<String> {
        let mut all = vec!["+time=2", "+tries=1", "@198.51.100.53"];
        all.extend_from_slice(args);
        ok(&world.fw, "dig", &all)
    };
    assert_eq!(dig(&["+short", "alpha.test"])?.trim(), GOOD_V4.to_string());
    assert_eq!(
        dig(&["+short", "+tcp", "AAAA", "v6only.test"])?.trim(),
        V6_HOST.to_string()
    );
    assert!(dig(&["nope.test"])?.contains("status: NXDOMAIN"));
    let alias = dig(&["+short", "alias.test"])?;
    assert_eq!(
        alias.lines().collect::<Vec<_>>(),
        ["alpha.test.", "198.51.100.10"]
    );
    world.dns().set_a("alpha.test", &[ATTACKER_V4, ECHO_V4]);
    let mut now: Vec<String> = dig(&["+short", "alpha.test"])?
        .lines()
        .map(str::to_owned)
        .collect();
    now.sort();
    assert_eq!(now, [ATTACKER_V4.to_string(), ECHO_V4.to_string()]);
    world.dns().remove("alpha.test");
    assert!(dig(&["ALPHA.test"])?.contains("status: NXDOMAIN"));

    let q = world.log().dns_queries();
    let seen: Vec<(String, String, Transport)> = q
        .iter()
        .map(|q| (q.name.clone(), q.qtype.clone(), q.transport))
        .collect();
    assert_eq!(seen[0], ("alpha.test.".into(), "A".into(), Transport::Udp));
    assert_eq!(
        seen[1],
        ("v6only.test.".into(), "AAAA".into(), Transport::Tcp)
    );
    assert!(seen.iter().any(|(n, _, _)| n == "nope.test."));
    assert!(
        seen.iter().any(|(n, _, _)| n == "ALPHA.test."),
        "case kept as received: {seen:?}"
    );
    assert_eq!(q.len(), 6);
    assert!(q.iter().all(|q| q.peer.ip() == FW_UPLINK_V4));
    Ok(())
}

#[test]
fn fw_only_route_leads_to_net() -> Result<()> {
    let world = World::new()?;
    let routes = world.fw.ip(["-4", "route", "show", "table", "all"])?;
    let non_local: Vec<&str> = routes
        .lines()
        .filter(|l| !l.starts_with("local ") && !l.starts_with("broadcast "))
        .collect();
    assert_eq!(non_local.len(), 2, "{routes}");
    assert!(
        non_local
            .iter()
            .any(|l| l.starts_with(&format!("default via {NET_UPLINK_V4} dev {FW_UPLINK_IF}")))
    );
    assert!(
        non_local
            .iter()
            .any(|l| l.starts_with(&format!("203.0.113.0/30 dev {FW_UPLINK_IF}")))
    );
    let v6 = world.fw.ip(["-6", "route"])?;
    assert!(
        v6.lines()
            .all(|l| l.contains(FW_UPLINK_IF) || l.starts_with("multicast")),
        "{v6}"
    );
    let links = world.fw.ip(["-o", "link"])?;
    assert_eq!(links.lines().count(), 2, "only lo and the uplink: {links}");
    // The internet namespace is a dead end: no default route, no forwarding, one link out.
    let net_routes = world.net.ip(["-4", "route"])?;
    assert!(!net_routes.contains("default"), "{net_routes}");
    assert_eq!(
        ok(&world.net, "sysctl", &["-n", "net.ipv4.ip_forward"])?.trim(),
        "0"
    );
    assert_eq!(
        ok(&world.fw, "sysctl", &["-n", "net.ipv4.ip_forward"])?.trim(),
        "1"
    );
    assert_eq!(world.net.ip(["-o", "link"])?.lines().count(), 2);
    Ok(())
}

#[test]
fn bytes_arrive_byte_exact_and_uploads_hash() -> Result<()> {
    let world = World::new()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bytes");
    let file_s = file.to_string_lossy().into_owned();
    ok(
        &world.fw,
        "curl",
        &[
            "-sS",
            "--fail",
            "-m",
            "30",
            "-o",
            &file_s,
            "http://198.51.100.10/bytes/1048576",
        ],
    )?;
    let got = std::fs::read(&file)?;
    assert_eq!(got.len(), 1_048_576);
    assert!(
        got == palisade_testbed::pattern(1_048_576),
        "payload differs from the pattern"
    );

    let up = curl_json(
        &world.fw,
        &[
            "--data-binary",
            &format!("@{file_s}"),
            "http://198.51.100.10/upload",
        ],
    )?;
    assert_eq!(up["len"], 1_048_576);
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&got)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(up["sha256"], want);
    assert!(
        ok(
            &world.fw,
            "curl",
            &["-sS", "-m", "10", "http://198.51.100.10/bytes/x"]
        )
        .is_ok()
    );
    Ok(())
}

#[test]
fn sse_redirect_and_special_hosts() -> Result<()> {
    let world = World::new()?;
    let sse = ok(
        &world.fw,
        "curl",
        &[
            "-sS",
            "-N",
            "-m",
            "10",
            "http://198.51.100.10/sse?n=3&ms=50",
        ],
    )?;
    assert_eq!(sse.matches("data: event").count(), 3, "{sse}");
    let head = ok(
        &world.fw,
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "http://198.51.100.10/redirect",
        ],
    )?;
    assert_eq!(head, "302 http://evil.test/");
    for (url, server) in [
        ("http://198.51.100.20/", "echo"),
        ("http://10.99.0.10/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[2001:db8::10]/", "v6"),
        ("http://198.51.100.11/", "attacker"),
    ] {
        let j = curl_json(&world.fw, &["-g", url])?;
        assert_eq!(j["server"], server, "{url}");
    }
    Ok(())
}

#[test]
fn tcp_udp_echo_banner_and_sinks_through_fw_runtime() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::new()?;
    let rt = world.fw.runtime()?;
    // Sockets must be made on the runtime's threads (in fw), hence spawn.
    let task = rt.spawn(async move {
        let tcp_echo = SocketAddr::new(TCP_V4.into(), 7);
        let mut s = tokio::net::TcpStream::connect(tcp_echo).await?;
        s.write_all(b"ping over tcp").await?;
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping over tcp");

        let udp = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        udp.send_to(b"ping over udp", SocketAddr::new(TCP_V4.into(), 7))
            .await?;
        let mut ubuf = [0u8; 64];
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut ubuf)).await??;
        assert_eq!(&ubuf[..n], b"ping over udp");
        assert_eq!(from, SocketAddr::new(TCP_V4.into(), 7));

        let mut ssh = tokio::net::TcpStream::connect(SocketAddr::new(TCP_V4.into(), 22)).await?;
        let mut banner = vec![0u8; SSH_BANNER.len()];
        ssh.read_exact(&mut banner).await?;
        assert_eq!(banner, SSH_BANNER);

        let mut sink =
            tokio::net::TcpStream::connect(SocketAddr::new(ATTACKER_V4.into(), 5432)).await?;
        sink.write_all(b"secret-ish bytes").await?;
        sink.shutdown().await?;
        let udp2 = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        udp2.send_to(b"quic?", SocketAddr::new(ATTACKER_V4.into(), 443))
            .await?;
        Ok::<_, anyhow::Error>(())
    });
    rt.block_on(task)??;
    assert!(world.wait_for(
        Duration::from_secs(5),
        |_| world.log().bytes_received("attacker").len() == 21
    ));
    let attacker = world.log().for_server("attacker");
    let tcp: Vec<u8> = attacker
        .iter()
        .filter(|e| e.kind == Kind::Bytes)
        .flat_map(|e| e.data.clone())
        .collect();
    assert_eq!(tcp, b"secret-ish bytes");
    let udp: Vec<&LogEntry> = attacker.iter().filter(|e| e.kind == Kind::Udp).collect();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].data, b"quic?");
    assert_eq!(udp[0].local, SocketAddr::new(ATTACKER_V4.into(), 443));
    assert!(
        world
            .log()
            .for_server("tcp")
            .iter()
            .any(|e| e.kind == Kind::Udp)
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.assert_untouched("attacker")
    }));
    let msg = caught
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        msg.contains("secret-ish bytes"),
        "panic message lists the log: {msg}"
    );
    drop(rt);
    Ok(())
}

#[test]
fn websocket_echo() -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let world = World::new()?;
    let rt = world.fw.runtime()?;
    let task = rt.spawn(async move {
        let tcp = tokio::net::TcpStream::connect(SocketAddr::new(GOOD_V4.into(), 80)).await?;
        let (mut ws, _) = tokio_tungstenite::client_async("ws://alpha.test/ws", tcp).await?;
        ws.send(Message::text("hello ws")).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
        match reply {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hello ws"),
            other => bail!("unexpected reply {other:?}"),
        }
        ws.close(None).await?;
        Ok(())
    });
    rt.block_on(task)??;
    Ok(())
}

#[test]
fn sandbox_like_namespace_runs_clients_through_fw() -> Result<()> {
    let world = World::new()?;
    let sb = world.sandbox_like()?;
    // resolv.conf of the namespace points at the test DNS server, so names resolve.
    let j = curl_json(&sb.netns, &["http://echo.test/"])?;
    assert_eq!(j["server"], "echo");
    assert_eq!(
        j["peer"]
            .as_str()
            .map(|p| p.starts_with(&format!("{}:", sb.addr))),
        Some(true),
        "{j}"
    );
    let short = ok(
        &sb.netns,
        "dig",
        &["+short", "+time=2", "+tries=1", "tcp.test"],
    )?;
    assert_eq!(short.trim(), TCP_V4.to_string());
    let mut cmd = sb.netns.command("python3");
    cmd.args(["-c", "import socket; s=socket.create_connection(('198.51.100.30', 22), timeout=5); print(s.recv(64).decode().strip())"]);
    let out = cmd.output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SSH-2.0-testbed"
    );
    // openssl s_client verifies the SNI-selected certificate against the test CA.
    let ca = world.test_ca_path().to_string_lossy().into_owned();
    let tls = sb
        .netns
        .command("openssl")
        .args([
            "s_client",
            "-connect",
            "198.51.100.10:443",
            "-servername",
            "beta.test",
        ])
        .args([
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-verify_hostname",
            "beta.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    let tls_out = String::from_utf8_lossy(&tls.stdout);
    assert!(
        tls.status.success() && tls_out.contains("Verify return code: 0 (ok)"),
        "{tls_out}"
    );
    // nc through the TCP echo.
    let nc = ok(
        &sb.netns,
        "sh",
        &["-c", "printf 'via nc' | timeout 10 nc -q 1 198.51.100.30 7"],
    )?;
    assert_eq!(nc, "via nc");
    let name = sb.netns.name().to_owned();
    drop(sb);
    assert!(!has_netns(&netns_list()?, &name));
    // Namespace destruction runs in a kernel work queue: the veth goes shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.fw.ip(["-o", "link"])?.lines().count() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "veth did not go with the namespace"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn concurrent_worlds_do_not_collide() -> Result<()> {
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || -> Result<()> {
                let world = World::new()?;
                let j = curl_json(
                    &world.fw,
                    &["-H", &format!("X-World: {i}"), "http://198.51.100.20/"],
                )?;
                assert_eq!(j["header_map"]["x-world"][0], i.to_string());
                let reqs: Vec<_> = world
                    .log()
                    .entries()
                    .into_iter()
                    .filter(|e| e.kind == Kind::HttpRequest)
                    .collect();
                assert_eq!(reqs.len(), 1, "each world sees only its own request");
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("world thread panicked"))??;
    }
    Ok(())
}

#[test]
fn cleanup_stale_removes_only_dead_owners() -> Result<()> {
    // A pid above any pid_max cannot be alive.
    let stale = "pt99999999x0z";
    let st = std::process::Command::new("ip")
        .args(["netns", "add", stale])
        .status()?;
    assert!(st.success());
    let mine = Netns::new("c")?;
    let removed = palisade_testbed::cleanup_stale()?;
    assert!(removed.iter().any(|n| n == stale), "{removed:?}");
    let list = netns_list()?;
    assert!(!has_netns(&list, stale));
    assert!(has_netns(&list, mine.name()));
    Ok(())
}

#[tokio::test]
async fn world_works_inside_an_async_test() -> Result<()> {
    let world = World::new()?;
    let fw_rt = world.fw.runtime()?;
    let body = fw_rt
        .spawn(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(SocketAddr::new(ECHO_V4.into(), 80)).await?;
            s.write_all(b"GET /async HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n")
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, anyhow::Error>(out)
        })
        .await??;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"path\":\"/async\""), "{body}");
    assert!(
        world
            .log()
            .wait_for_async(Duration::from_secs(5), |l| l
                .iter()
                .any(|e| e.kind == Kind::HttpRequest))
            .await
    );
    // Dropping a runtime inside an async context must not block: shut it down in the background.
    fw_rt.shutdown_background();
    let fw = world.fw.name().to_owned();
    drop(world);
    assert!(!has_netns(&netns_list()?, &fw));
    Ok(())
}
