//! Cost of sniffing what the proxy sees on every new connection: a captured curl ClientHello and
//! a small HTTP head, each against a baseline measured in the same run (copying the same bytes,
//! which is the least any parser must do).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_wire::{parse_client_hello, parse_http_head, sniff};

const CURL: &[u8] = include_bytes!("../testdata/curl.bin");
const SPLIT: &[u8] = include_bytes!("../testdata/split-records.bin");
const HEAD: &[u8] =
    b"GET /v1/models HTTP/1.1\r\nHost: api.openai.test\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sniff");
    g.bench_function("baseline_copy_curl_hello", |b| {
        b.iter(|| black_box(CURL).to_vec())
    });
    g.bench_function("client_hello_curl", |b| {
        b.iter(|| parse_client_hello(black_box(CURL)))
    });
    g.bench_function("client_hello_split_records", |b| {
        b.iter(|| parse_client_hello(black_box(SPLIT)))
    });
    g.bench_function("sniff_curl", |b| b.iter(|| sniff(black_box(CURL))));
    g.bench_function("baseline_copy_http_head", |b| {
        b.iter(|| black_box(HEAD).to_vec())
    });
    g.bench_function("http_head_small", |b| {
        b.iter(|| parse_http_head(black_box(HEAD)))
    });
    g.bench_function("sniff_http_head", |b| b.iter(|| sniff(black_box(HEAD))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
