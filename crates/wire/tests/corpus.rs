//! The committed fuzz seed corpora go through both parsers and every invariant, so `make test`
//! covers them without cargo-fuzz.

use std::path::Path;

use palisade_wire::invariants::{check_client_hello, check_http_head};

fn corpus(name: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        files.push((path.display().to_string(), std::fs::read(&path)?));
    }
    files.sort();
    Ok(files)
}

#[test]
fn client_hello_corpus() {
    let files = corpus("client_hello").unwrap();
    assert!(files.len() >= 10, "seed corpus went missing");
    for (path, bytes) in files {
        check_client_hello(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        check_http_head(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn http_head_corpus() {
    let files = corpus("http_head").unwrap();
    assert!(files.len() >= 10, "seed corpus went missing");
    for (path, bytes) in files {
        check_http_head(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        check_client_hello(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
