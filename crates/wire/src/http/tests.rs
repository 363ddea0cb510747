//! Table tests of request heads: normal shapes, the target forms of threats.md case 6 and 7,
//! and the smuggling shapes of case 19.

use super::*;

fn head(buf: &[u8]) -> RequestHead {
    match parse_http_head(buf) {
        Ok(Some(h)) => h,
        other => panic!(
            "{:?}: expected a head, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn check_all_prefixes(buf: &[u8]) {
    let end = head(buf).head_len;
    for n in 0..end {
        assert_eq!(
            parse_http_head(&buf[..n]),
            Err(SniffError::Incomplete),
            "prefix {n} of {buf:?}"
        );
    }
}

#[test]
fn normal_heads() {
    let h =
        head(b"GET /v1/models?x=1 HTTP/1.1\r\nHost: api.openai.test\r\nAccept: */*\r\n\r\nBODY");
    assert_eq!(
        (h.method.as_str(), h.target.as_str(), h.version),
        ("GET", "/v1/models?x=1", 1)
    );
    assert_eq!(h.host.as_deref(), Some(&b"api.openai.test"[..]));
    assert_eq!(h.head_len, 67);
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.target_form(), TargetForm::Origin);
    assert_eq!(h.target_authority(), None);

    let h =
        head(b"POST /up HTTP/1.1\r\nhOsT:   alpha.test:8080 \r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(h.host.as_deref(), Some(&b"alpha.test:8080"[..]));
    assert_eq!(h.content_length(), Some(5));
    assert!(!h.is_chunked());

    let h = head(b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert!(h.is_chunked());
    assert_eq!(h.content_length(), None);

    // HTTP/1.0 may omit Host.
    let h = head(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((h.version, h.host), (0, None));

    // Userinfo in Host is passed on raw: name canonicalisation in palisade-policy refuses it.
    let h = head(b"GET / HTTP/1.1\r\nHost: allowed.test@evil.test\r\n\r\n");
    assert_eq!(h.host.as_deref(), Some(&b"allowed.test@evil.test"[..]));

    // An unregistered method counts as HTTP once its line ends in a version.
    let h = head(b"FROBNICATE /x HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(h.method, "FROBNICATE");

    for buf in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: curl/8\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
        b"FROBNICATE /x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        check_all_prefixes(buf);
    }
}

#[test]
fn target_forms() {
    let h = head(b"GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Absolute);
    assert_eq!(h.target_authority(), Some("evil.test"));
    assert_eq!(h.host.as_deref(), Some(&b"allowed.test"[..]));

    let h = head(b"GET HTTP://Evil.Test:8080?q HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
    assert_eq!(h.target_authority(), Some("Evil.Test:8080"));

    let h = head(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Authority);
    assert_eq!(h.target_authority(), Some("evil.test:443"));

    let h = head(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(h.target_form(), TargetForm::Asterisk);
}

#[test]
fn not_http() {
    for buf in [
        &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"get key\r\n",
        b"NICK palisade\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x16\x03\x01",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGH",
        b"\r\n\r\nSSH-2.0-x\r\n",
    ] {
        assert_eq!(
            parse_http_head(buf),
            Ok(None),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn incomplete() {
    for buf in [
        &b""[..],
        b"G",
        b"GE",
        b"GET",
        b"GET ",
        b"PROPFIND",
        b"FROBNICATE /x HTTP/1.",
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r",
        b"\r",
        b"\r\n",
        b"\r\nGE",
    ] {
        assert_eq!(parse_http_head(buf), Err(SniffError::Incomplete), "{buf:?}");
    }
}

#[test]
fn malformed_shapes() {
    let long_value = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n",
        "X: y\r\n".repeat(MAX_HEADERS)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bare LF request line", b"GET / HTTP/1.1\nHost: a.test\r\n\r\n".to_vec()),
        ("bare LF headers", b"GET / HTTP/1.1\r\nHost: a.test\n\n".to_vec()),
        ("bare LF end", b"GET / HTTP/1.1\r\nHost: a.test\r\n\n".to_vec()),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: a.test\rX: y\r\n\r\n".to_vec()),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\n c\r\n\r\n".to_vec()),
        ("obs-fold first header", b"GET / HTTP/1.1\r\n Host: a.test\r\n\r\n".to_vec()),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a.test\0.evil\r\n\r\n".to_vec()),
        ("NUL in target", b"GET /\0 HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec()),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n".to_vec()),
        ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n".to_vec()),
        ("duplicate Host case", b"GET / HTTP/1.1\r\nHost: a.test\r\nHOST: a.test\r\n\r\n".to_vec()),
        ("missing Host 1.1", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec()),
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        ("TE and CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("duplicate CL same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n".to_vec()),
        ("duplicate CL differ", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n".to_vec()),
        ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n".to_vec()),
        ("CL sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n".to_vec()),
        ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n".to_vec()),
        ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n".to_vec()),
        ("CL overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n".to_vec()),
        // A coding list is refused even when it ends in chunked: the follower beneath hyper and
        // the intercepting path refuse it too (one rule, `framing::body_framing`).
        ("TE gzip then chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec()),
        ("TE not chunked last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec()),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n".to_vec()),
        ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec()),
        ("TE vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n".to_vec()),
        ("TE empty element", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n".to_vec()),
        ("TE in 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec()),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec()),
        ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("userinfo in target", b"GET http://allowed.test@evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_vec()),
        ("CONNECT origin form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("CONNECT no port", b"CONNECT evil.test HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("CONNECT userinfo", b"CONNECT a@evil.test:443 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("authority form with GET", b"GET evil.test:80 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("tab after method", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("CR after method", b"GET\r\n\r\n".to_vec()),
        ("lowercase version", b"FOO /x http/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("empty line before request", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("head over 64 KiB", long_value.into_bytes()),
        ("too many headers", many_headers.into_bytes()),
        ("bad header name", b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n".to_vec()),
        ("control char in value", b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n".to_vec()),
    ];
    for (name, buf) in cases {
        match parse_http_head(&buf) {
            Err(SniffError::Malformed(reason)) => assert!(!reason.is_empty()),
            other => panic!("case {name:?}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn unterminated_head_over_the_limit() {
    let mut buf = b"GET / HTTP/1.1\r\nHost: a.test\r\nX: ".to_vec();
    buf.resize(MAX_HEAD - 1, b'a');
    assert_eq!(parse_http_head(&buf), Err(SniffError::Incomplete));
    buf.push(b'a');
    assert!(matches!(
        parse_http_head(&buf),
        Err(SniffError::Malformed(_))
    ));
}

#[test]
fn debug_hides_header_values() {
    let h = head(b"GET / HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer sk-secret\r\n\r\n");
    let debug = format!("{h:?}");
    assert!(!debug.contains("sk-secret"), "{debug}");
    assert!(debug.contains("Authorization"));
}
