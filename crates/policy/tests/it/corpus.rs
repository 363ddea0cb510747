//! Every committed seed of the fuzz corpus goes through the same function its fuzz target calls.

use std::path::PathBuf;

fn run(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut count = 0;
    for entry in entries {
        let path = match entry {
            Ok(e) => e.path(),
            Err(e) => panic!("{e}"),
        };
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        f(&data);
        count += 1;
    }
    assert!(
        count >= 10,
        "{target}: expected a seed corpus, found {count} files in {}",
        dir.display()
    );
}

#[test]
fn policy_json_corpus() {
    run("policy_json", palisade_policy::fuzzing::policy_json);
}

#[test]
fn canonical_name_corpus() {
    run("canonical_name", palisade_policy::fuzzing::canonical_name);
}
