//! Privileged tests of the test world's topology and lifecycle (run as root).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use palisade_testbed::addrs::*;
use palisade_testbed::{Kind, Netns, World};

mod common;
use common::{curl_json, has_netns, netns_list, ok};

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
