use super::*;

#[test]
fn ids() {
    for good in ["a", "sbx-1", "A_b-9", &"x".repeat(64)] {
        assert!(validate_id(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "-a",
        "_a",
        "a/b",
        "..",
        "a b",
        "a:b",
        &"x".repeat(65),
        "é",
    ] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_redacts_environment_values() {
    let spec = SandboxSpec {
        env: vec![("API_KEY".into(), "sk-secret".into())].into(),
        ..Default::default()
    };
    let req = ExecRequest {
        envs: vec![("T".into(), "tok-secret".into())].into(),
        ..Default::default()
    };
    let out = format!("{spec:?} {req:?}");
    assert!(out.contains("API_KEY") && !out.contains("secret"), "{out}");
}

#[test]
fn hostnames_and_env() {
    assert!(validate_hostname("box-1.local").is_ok());
    for bad in ["", "-a", "a..b", "a_b", "a b"] {
        assert!(validate_hostname(bad).is_err(), "{bad}");
    }
    assert!(validate_env("K", "v=1").is_ok());
    assert!(validate_env("K=", "v").is_err());
    let e = validate_env("TOKEN", "sec\0ret").unwrap_err().to_string();
    assert!(!e.contains("sec"), "{e}");
}
