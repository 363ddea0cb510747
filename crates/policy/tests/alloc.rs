//! `decide_name` and `check_addr` must not allocate: they run for every connection.

use palisade_policy::{Policy, canonicalize};

#[test]
fn decisions_do_not_allocate() {
    let json = r#"{"mode":"custom","allow_domains":["api.example.com","*.example.org"],"allow_cidrs":["10.0.0.0/8"],
        "transforms":[{"domain":"*.x.example.org","inject_headers":{"authorization":"k"}}]}"#;
    let compiled = match Policy::from_json(json.as_bytes()) {
        Ok(p) => p.compile(),
        Err(e) => panic!("{e}"),
    };
    let names: Vec<_> = [
        "api.example.com",
        "a.b.example.org",
        "q.x.example.org",
        "nope.example.net",
        "localhost",
    ]
    .iter()
    .filter_map(|n| canonicalize(n.as_bytes()).ok())
    .collect();
    assert_eq!(names.len(), 5);
    let addrs = ["10.1.1.1", "::ffff:10.1.1.1", "8.8.8.8", "fd00:ec2::254"]
        .map(|a| a.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()));
    // Warm up (first use of lazily initialised state, if any).
    for n in &names {
        drop(compiled.decide_name(n));
    }
    let counts = allocation_counter::measure(|| {
        for _ in 0..100 {
            for n in &names {
                std::hint::black_box(compiled.decide_name(n));
            }
            for a in addrs {
                std::hint::black_box(compiled.check_addr(a));
            }
        }
    });
    assert_eq!(counts.count_total, 0, "{counts:?}");
}
