use palisade_policy::{DomainPattern, NameError, canonicalize};

use crate::name;

#[test]
fn canonical_forms() {
    let table = [
        ("example.com", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("Example.Com.", "example.com"),
        ("localhost", "localhost"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE.", "xn--bcher-kva.example"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("a\u{3002}example\u{3002}com", "a.example.com"), // ideographic full stops
        ("ｅｘａｍｐｌｅ.com", "example.com"),            // fullwidth letters
        ("a-b--c.example", "a-b--c.example"),
        ("1password.com", "1password.com"),
        ("123.example.com", "123.example.com"),
    ];
    for (raw, want) in table {
        assert_eq!(name(raw).as_str(), want, "{raw:?}");
        assert_eq!(name(want).as_str(), want, "idempotent for {want:?}");
    }
}

#[test]
fn malformed_names_are_refused() {
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    let huge = "a".repeat(5000);
    let table: Vec<(&[u8], NameError)> = vec![
        (b"", NameError::Empty),
        (b".", NameError::Empty),
        (b"..", NameError::EmptyLabel),
        (b"example.com..", NameError::EmptyLabel),
        (b".example.com", NameError::EmptyLabel),
        (b"a..b.com", NameError::EmptyLabel),
        (b"exam\0ple.com", NameError::InvalidChar { ch: '\0' }),
        (b"example.com\0", NameError::InvalidChar { ch: '\0' }),
        (
            b"example.com\0.evil.test",
            NameError::InvalidChar { ch: '\0' },
        ),
        (b"exa mple.com", NameError::InvalidChar { ch: ' ' }),
        (b"example.com\r\n", NameError::InvalidChar { ch: '\r' }),
        (b"a_b.example.com", NameError::InvalidChar { ch: '_' }),
        (
            b"allowed.test@evil.test",
            NameError::InvalidChar { ch: '@' },
        ),
        (b"allowed.test:443", NameError::InvalidChar { ch: ':' }),
        (b"allowed.test/path", NameError::InvalidChar { ch: '/' }),
        (b"*.example.com", NameError::InvalidChar { ch: '*' }),
        (b"\xff\xfe.com", NameError::NotUtf8),
        (long_label.as_bytes(), NameError::LabelTooLong { len: 64 }),
        (
            long_name.as_bytes(),
            NameError::TooLong {
                len: long_name.len(),
                limit: 253,
            },
        ),
        (
            huge.as_bytes(),
            NameError::TooLong {
                len: 5000,
                limit: 1024,
            },
        ),
        (b"-lead.example.com", NameError::Hyphen),
        (b"trail-.example.com", NameError::Hyphen),
        (b"127.0.0.1", NameError::IpLiteral),
        (b"127.1", NameError::IpLiteral),
        (b"2130706433", NameError::IpLiteral),
        (b"0x7f.0.0.1", NameError::IpLiteral),
        (b"0x7f000001", NameError::IpLiteral),
        (b"169.254.169.254.", NameError::IpLiteral),
        (b"::1", NameError::IpLiteral),
        (b"[::1]", NameError::IpLiteral),
        (b"::ffff:127.0.0.1", NameError::IpLiteral),
        (b"xn--.example", NameError::Idna),
    ];
    for (raw, want) in table {
        assert_eq!(
            canonicalize(raw),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Longest legal name and label pass.
    let max_label = format!("{}.com", "a".repeat(63));
    assert!(canonicalize(max_label.as_bytes()).is_ok());
    let max_name = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "b".repeat(61));
    assert_eq!(max_name.len(), 253);
    assert!(canonicalize(max_name.as_bytes()).is_ok());
    assert!(canonicalize(format!("{max_name}.").as_bytes()).is_ok());
}

#[test]
fn errors_say_what_was_wrong() {
    let msg = |raw: &[u8]| {
        canonicalize(raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        msg(b"a\0b.com"),
        r"the name contains '\0', which is not allowed in a host name"
    );
    assert_eq!(
        msg(b"127.0.0.1"),
        "the name is an IP address literal, not a host name"
    );
    assert!(
        msg(format!("{}.com", "a".repeat(70)).as_bytes())
            .contains("70 bytes long; the limit is 63")
    );
}

#[test]
fn wildcard_matches_on_label_boundaries_only() {
    // threats.md case 8
    let Ok(p) = DomainPattern::parse("*.example.com") else {
        panic!("valid pattern")
    };
    assert!(p.is_wildcard());
    assert_eq!(p.base(), "example.com");
    for yes in [
        "a.example.com",
        "a.b.example.com",
        "xn--bcher-kva.example.com",
    ] {
        assert!(p.matches(&name(yes)), "{yes}");
    }
    for no in [
        "example.com",
        "evilexample.com",
        "example.com.evil.test",
        "aexample.com",
        "com",
        "example.org",
    ] {
        assert!(!p.matches(&name(no)), "{no}");
    }
    let Ok(exact) = DomainPattern::parse("example.com") else {
        panic!("valid pattern")
    };
    assert!(!exact.is_wildcard());
    assert!(exact.matches(&name("EXAMPLE.com.")));
    assert!(!exact.matches(&name("a.example.com")));
}
