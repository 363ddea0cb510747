//! Cost of one name decision with 50 rules (the API limit) and 10,000 rules, against a linear
//! scan over the same patterns measured in the same run.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade_policy::{
    CompiledPolicy, DomainPattern, Limits, Mode, NetworkPolicySpec, canonicalize,
};

fn policy(rules: usize) -> (CompiledPolicy, Vec<DomainPattern>) {
    let domains: Vec<String> = (0..rules)
        .map(|i| {
            if i % 2 == 0 {
                format!("svc{i}.example{}.com", i % 97)
            } else {
                format!("*.zone{i}.example.net")
            }
        })
        .collect();
    let spec = NetworkPolicySpec {
        mode: Mode::Custom,
        allow_domains: Some(domains),
        allow_cidrs: None,
        transforms: None,
        budgets: None,
        ..Default::default()
    };
    let limits = Limits {
        max_domains: usize::MAX,
        ..Limits::LEAP0
    };
    match spec.validate_with(&limits) {
        Ok(p) => (p.compile(), p.allow_domains().to_vec()),
        Err(e) => unreachable_policy(&e.to_string()),
    }
}

#[expect(clippy::panic, reason = "a bench with a broken fixture must stop")]
fn unreachable_policy(msg: &str) -> ! {
    panic!("bench policy invalid: {msg}")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_name");
    for rules in [50usize, 10_000] {
        let (compiled, patterns) = policy(rules);
        let cases = [
            (
                "exact-hit",
                format!("svc{}.example{}.com", rules - 2, (rules - 2) % 97),
            ),
            (
                "wildcard-hit",
                format!("a.b.c.zone{}.example.net", rules - 1),
            ),
            ("miss", "www.not-in-the-policy.example.org".to_owned()),
        ];
        for (case, raw) in cases {
            let Ok(name) = canonicalize(raw.as_bytes()) else {
                continue;
            };
            group.bench_with_input(
                BenchmarkId::new(format!("hash/{case}"), rules),
                &name,
                |b, n| b.iter(|| compiled.decide_name(black_box(n))),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("linear/{case}"), rules),
                &name,
                |b, n| {
                    b.iter(|| {
                        patterns
                            .iter()
                            .filter(|p| p.matches(black_box(n)))
                            .max_by_key(|p| p.base().len())
                            .cloned()
                    })
                },
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("canonicalize");
    for raw in [
        "api.example.com",
        "Sub.Domain.EXAMPLE.com.",
        "bücher.example",
        "xn--bcher-kva.example",
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(raw), raw, |b, r| {
            b.iter(|| canonicalize(black_box(r.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
