use super::*;

/// This machine's hybrid layout (v1 controllers, named systemd, unified at `unified/`).
const HYBRID: &str = "\
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// The same host seen from `ip netns exec`: a fresh sysfs, nothing below it.
const NETNS_EXEC: &str = "65 57 0:40 / /sys rw,relatime - sysfs rel-ns rw\n";

/// A cgroup v2 host (Debian 12 default).
const UNIFIED: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

fn good() -> HostView {
    HostView {
        euid: 0,
        mountinfo: HYBRID.to_owned(),
        filesystems: "nodev\tsysfs\nnodev\toverlay\n".to_owned(),
        v2_controllers: None,
        runc: Ok("runc version 1.1.5+ds1".into()),
        nft: Ok("nftables v1.0.6".into()),
        ip: Ok("ip utility, iproute2-6.1.0".into()),
        nofile: (20_000, 20_000),
    }
}

#[test]
fn this_hosts_layout_passes() {
    assert_eq!(problems(&good()), Vec::<String>::new());
}

#[test]
fn ip_netns_exec_names_every_missing_cgroup_mount() {
    let v = HostView {
        mountinfo: NETNS_EXEC.to_owned(),
        ..good()
    };
    let p = problems(&v);
    assert_eq!(p.len(), 1, "{p:?}");
    for c in V1_CONTROLLERS {
        assert!(p[0].contains(&format!("/sys/fs/cgroup/{c}")), "{}", p[0]);
    }
    assert!(p[0].contains("ip netns exec") && p[0].contains("nsenter --net"));
}

#[test]
fn one_missing_controller_is_named_alone() {
    let v = HostView {
        mountinfo: HYBRID
            .lines()
            .filter(|l| !l.ends_with("rw,freezer"))
            .collect::<Vec<_>>()
            .join("\n"),
        ..good()
    };
    let p = problems(&v);
    assert_eq!(
        p,
        vec!["cgroup mounts missing: /sys/fs/cgroup/freezer".to_owned()]
    );
}

#[test]
fn controllers_mounted_elsewhere_do_not_count() {
    let v = HostView {
        mountinfo: HYBRID.replace("/sys/fs/cgroup/", "/mnt/cg/"),
        ..good()
    };
    assert!(problems(&v)[0].starts_with("cgroup mounts missing"));
}

#[test]
fn unified_hosts_need_their_controllers() {
    let mut v = HostView {
        mountinfo: UNIFIED.to_owned(),
        v2_controllers: Some("cpuset cpu io memory hugetlb pids rdma misc\n".into()),
        ..good()
    };
    assert_eq!(problems(&v), Vec::<String>::new());
    v.v2_controllers = Some("cpuset io\n".into());
    assert_eq!(
        problems(&v),
        vec!["cgroup v2 controllers not enabled at /sys/fs/cgroup: cpu, memory, pids".to_owned()]
    );
}

#[test]
fn tools_root_overlay_and_limits_are_each_reported() {
    let v = HostView {
        euid: 1000,
        filesystems: "nodev\tsysfs\n".into(),
        runc: Err("/usr/sbin/runc: No such file or directory".into()),
        nft: Err("nft: No such file or directory".into()),
        ip: Ok("ip".into()),
        nofile: (1024, 1024),
        ..good()
    };
    let p = problems(&v);
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p[0].contains("root") && p[0].contains("uid 1000"));
    assert!(p[1].contains("overlay"));
    assert!(p[2].contains("runc") && p[2].contains("package runc"));
    assert!(p[3].contains("nft") && p[3].contains("nftables"));
    assert!(p[4].contains("1024") && p[4].contains("4096"));
}

#[test]
fn malformed_mountinfo_lines_are_skipped() {
    let v = HostView {
        mountinfo: format!("garbage\n - \n1 2 3\n{HYBRID}"),
        ..good()
    };
    assert_eq!(problems(&v), Vec::<String>::new());
}
