use super::*;

#[test]
fn names() {
    for good in [HOST_TEMPLATE, DEBIAN_TEMPLATE, "user/my-image:1.0", "a"] {
        assert!(validate_template_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "/a",
        "a/",
        "a//b",
        "a/../b",
        "..",
        "a b",
        "a,b",
        &"x".repeat(129),
    ] {
        assert!(validate_template_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn dir_names_are_injective_and_safe() {
    assert_eq!(dir_name(DEBIAN_TEMPLATE), "system_2fdebian_3abookworm");
    assert_ne!(dir_name("a/b"), dir_name("a_2fb"));
    assert!(!dir_name("x:y/z_w").contains([':', '/', ',']));
}
