//! Issue 11.5, storage faults against the real daemon: a full disk during a snapshot or a
//! template build, a store locked by another process, a read-only data directory. Each gives a
//! clear error and loses nothing already stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use std::process::{Command, Stdio};

use common::Bed;

fn snapshot_archives(bed: &Bed) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(bed.data_dir().join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Free bytes of the file system under `p`.
fn free_bytes(p: &std::path::Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    t.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn full_disk_during_a_snapshot_is_a_clear_error_and_loses_nothing() {
    let mut bed = Bed::on_small_disk("full", 64);
    bed.start();
    let id = bed.create(r#"{"template_name":"system/host"}"#);
    let (code, out) = bed.exec(&id, "echo kept > /root/kept");
    assert_eq!(code, 0, "{out}");
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        r#"{"name":"small"}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let before = snapshot_archives(&bed);
    assert_eq!(before.len(), 1);
    // 8 MiB the archive cannot compress, then everything but 512 KiB taken by a filler.
    let (code, out) = bed.exec(&id, "head -c 8388608 /dev/urandom > /root/big");
    assert_eq!(code, 0, "{out}");
    let filler = bed.data_dir().join("filler");
    let room = free_bytes(&bed.data_dir()).saturating_sub(512 * 1024);
    let st = Command::new("fallocate")
        .args(["-l", &room.to_string()])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(st.success());

    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        r#"{"name":"big"}"#,
    );
    assert_eq!(r.status, 503, "{r:?}");
    let msg = r.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(msg.contains("disk is full"), "{msg}");
    // Nothing half-written stays, the first archive is untouched, no row was added.
    assert_eq!(snapshot_archives(&bed), before);
    let list = bed.api("GET", "/v1/snapshots?page=1&page-size=100", "");
    let names: Vec<String> = list.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, vec!["small".to_owned()], "{list:?}");
    // The sandbox was thawed after the failed archive and still works.
    let r = bed.api("GET", &format!("/v1/sandbox/{id}"), "");
    assert_eq!(r.json()["state"], "running", "{r:?}");
    let (code, out) = bed.exec(&id, "cat /root/kept");
    assert_eq!((code, out.trim()), (0, "kept"));

    // With room again, the snapshot stored before the fault restores whole.
    std::fs::remove_file(&filler).unwrap();
    let r = bed.api(
        "POST",
        "/v1/snapshot/restore",
        r#"{"snapshot_name":"small","auto_pause":false}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let restored = r.json()["id"].as_str().unwrap().to_owned();
    let (code, out) = bed.exec(&restored, "cat /root/kept; test ! -e /root/big");
    assert_eq!((code, out.trim()), (0, "kept"));
}

/// A `docker save` style archive at `dir/name.tar` whose one layer holds `/etc/marker` (saying
/// `name`) and `/blob`, `blob_bytes` of random data the disk cannot compress.
fn image_archive(dir: &std::path::Path, name: &str, blob_bytes: u64) -> std::path::PathBuf {
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(work.join("layer/etc")).unwrap();
    std::fs::write(work.join("layer/etc/marker"), name).unwrap();
    let script = format!(
        "set -e; cd {work:?}; head -c {blob_bytes} /dev/urandom > layer/blob; \
         tar -C layer -cf layer.tar etc blob; echo '{{\"config\":{{\"Env\":[\"A=1\"]}}}}' > config.json; \
         echo '[{{\"Config\":\"config.json\",\"Layers\":[\"layer.tar\"]}}]' > manifest.json; \
         tar -cf ../{name}.tar manifest.json config.json layer.tar"
    );
    let st = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(st.success(), "{script}");
    dir.join(format!("{name}.tar"))
}

#[test]
fn full_disk_during_a_template_build_is_a_clear_error_and_loses_nothing() {
    let mut bed = Bed::on_small_disk("fullt", 64);
    bed.start();
    // Stored before the fault: a template and a snapshot.
    let archives = bed.data.path().to_owned();
    let small = image_archive(&archives, "small", 64 * 1024);
    let body = format!(
        r#"{{"name":"small-img","uri":"oci-archive:{}"}}"#,
        small.display()
    );
    let r = bed.api("POST", "/v1/template", &body);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["build_state"], "ready", "{r:?}");
    let id = bed.create(r#"{"template_name":"system/host"}"#);
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        r#"{"name":"kept"}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let templates_dir = bed.data_dir().join("runtime/templates");
    let before = bed.api("GET", "/v1/templates", "").json()["items"].clone();
    let snaps = snapshot_archives(&bed);

    // An image of 16 MiB onto a disk with 2 MiB left.
    let big = image_archive(&archives, "big", 16 << 20);
    let filler = bed.data_dir().join("filler");
    let room = free_bytes(&bed.data_dir()).saturating_sub(2 << 20);
    let st = Command::new("fallocate")
        .args(["-l", &room.to_string()])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(st.success());
    let body = format!(
        r#"{{"name":"big-img","uri":"oci-archive:{}"}}"#,
        big.display()
    );
    let r = bed.api("POST", "/v1/template", &body);
    assert_eq!(r.status, 503, "{r:?}");
    let msg = r.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(msg.contains("disk is full"), "{msg}");

    // Nothing half-built stays, the template list and the snapshots are as they were.
    let leftovers: Vec<String> = std::fs::read_dir(&templates_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let after = bed.api("GET", "/v1/templates", "").json()["items"].clone();
    assert_eq!(after, before);
    assert_eq!(snapshot_archives(&bed), snaps);
    // The template stored before still holds its files.
    let marker = std::fs::read_dir(&templates_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rootfs/etc/marker"))
        .find(|p| p.exists())
        .unwrap();
    assert_eq!(std::fs::read_to_string(marker).unwrap(), "small");

    // With room again, the same import succeeds and the snapshot restores.
    std::fs::remove_file(&filler).unwrap();
    let r = bed.api("POST", "/v1/template", &body);
    assert_eq!(r.status, 201, "{r:?}");
    let r = bed.api(
        "POST",
        "/v1/snapshot/restore",
        r#"{"snapshot_name":"kept","auto_pause":false}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn locked_store_is_a_clear_error_and_read_only_data_dir_is_refused() {
    let mut bed = Bed::new("locked", "");
    bed.start();
    let id = bed.create(r#"{"template_name":"system/host"}"#);
    // Another process takes SQLite's write lock and keeps it past the busy timeout (5 s).
    let db = bed.data_dir().join("palisade.db");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect({:?}, isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(9)\n",
            db.display().to_string()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let r = bed.api("POST", "/v1/sandbox", r#"{"template_name":"system/host"}"#);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.status, 503, "{r:?}");
    let msg = r.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(msg.contains("locked by another process"), "{msg}");
    // Nothing was made by the refused create, and the lock gone, all works again.
    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    assert_eq!(list.json()["total_items"], 1, "{list:?}");
    let (code, out) = bed.exec(&id, "echo ok");
    assert_eq!((code, out.trim()), (0, "ok"));
    let second = bed.create(r#"{"template_name":"system/host"}"#);

    // A read-only data directory: the daemon says so at start, and changes nothing.
    bed.kill9();
    let dir = bed.data_dir();
    let ro = |args: &[&str]| {
        let st = Command::new("mount")
            .args(args)
            .arg(&dir)
            .arg(&dir)
            .status();
        assert!(st.unwrap().success(), "mount {args:?}");
    };
    ro(&["--bind"]);
    let st = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&dir)
        .status()
        .unwrap();
    let (status, err) = if st.success() {
        bed.serve_refused()
    } else {
        (st, String::new())
    };
    let _ = Command::new("umount").arg(&dir).status();
    assert!(!status.success());
    assert!(err.contains("is read-only"), "{err}");
    bed.start();
    for s in [&id, &second] {
        let (code, out) = bed.exec(s, "echo back");
        assert_eq!((code, out.trim()), (0, "back"), "{s}");
    }
}
