//! Scrubbing throughput on a response-like body, against a plain copy of the same bytes (the
//! baseline the proxy pays anyway), measured in the same run.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_scrub::Patterns;

fn body() -> Vec<u8> {
    // JSON-ish text with an occasional echoed secret, 1 MiB.
    let chunk = br#"{"id":"chatcmpl-123","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?"}}],"usage":{"prompt_tokens":9}}
"#;
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < 1 << 20 {
        out.extend_from_slice(chunk);
        if i % 100 == 0 {
            out.extend_from_slice(b"echo: Bearer sk-bench-0123456789abcdef\n");
        }
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let data = body();
    let p = Patterns::new([b"Bearer sk-bench-0123456789abcdef".as_slice()])
        .unwrap()
        .unwrap();
    let mut g = c.benchmark_group("scrub_1MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("copy_16KiB_frames (baseline)", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(data.len());
            for frame in data.chunks(16 * 1024) {
                out.extend_from_slice(frame);
            }
            out
        })
    });
    g.bench_function("scrub_16KiB_frames", |b| {
        b.iter(|| {
            let mut s = p.stream();
            let mut out = Vec::with_capacity(data.len());
            for frame in data.chunks(16 * 1024) {
                s.feed(frame, &mut out);
            }
            s.finish(&mut out);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
