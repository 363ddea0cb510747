//! Hand-built ClientHellos: the malformed shapes of threats.md case 18, each one byte away from a
//! hello that parses.

use super::*;

/// Builds a ClientHello message and wraps it in records.
#[derive(Clone)]
struct Hello {
    version: [u8; 2],
    session_id: Vec<u8>,
    suites: Vec<u8>,
    compression: Vec<u8>,
    extensions: Option<Vec<(u16, Vec<u8>)>>,
    trailing: Vec<u8>,
}

impl Hello {
    fn new() -> Self {
        Hello {
            version: [3, 3],
            session_id: vec![7; 32],
            suites: vec![0x13, 0x01, 0x13, 0x02],
            compression: vec![0],
            extensions: Some(vec![(0, sni_ext(b"alpha.test")), (16, alpn_ext(&[b"h2"]))]),
            trailing: Vec::new(),
        }
    }

    fn ext(mut self, ty: u16, data: Vec<u8>) -> Self {
        self.extensions
            .get_or_insert_with(Vec::new)
            .push((ty, data));
        self
    }

    fn message(&self) -> Vec<u8> {
        let mut body = self.version.to_vec();
        body.extend([0x5a; 32]);
        body.push(self.session_id.len() as u8);
        body.extend(&self.session_id);
        body.extend((self.suites.len() as u16).to_be_bytes());
        body.extend(&self.suites);
        body.push(self.compression.len() as u8);
        body.extend(&self.compression);
        if let Some(exts) = &self.extensions {
            let mut block = Vec::new();
            for (ty, data) in exts {
                block.extend(ty.to_be_bytes());
                block.extend((data.len() as u16).to_be_bytes());
                block.extend(data);
            }
            body.extend((block.len() as u16).to_be_bytes());
            body.extend(block);
        }
        body.extend(&self.trailing);
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    fn bytes(&self) -> Vec<u8> {
        records(&self.message(), &[usize::MAX])
    }
}

/// Wraps `msg` in handshake records with the given fragment sizes (the last one repeats).
fn records(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = msg;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i.min(sizes.len() - 1)].min(rest.len());
        out.extend([HANDSHAKE, 3, 1]);
        out.extend((n as u16).to_be_bytes());
        out.extend(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    sni_list(&[(0, name)])
}

fn sni_list(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (ty, name) in names {
        list.push(*ty);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(*name);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend(list);
    out
}

fn alpn_ext(protos: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protos {
        list.push(p.len() as u8);
        list.extend(*p);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend(list);
    out
}

fn check_all_prefixes(buf: &[u8]) {
    for n in 0..buf.len() {
        assert_eq!(
            parse_client_hello(&buf[..n]),
            Err(SniffError::Incomplete),
            "prefix {n}"
        );
    }
}

#[test]
fn builder_hello_parses() {
    let buf = Hello::new().bytes();
    let hello = parse_client_hello(&buf).unwrap().unwrap();
    assert_eq!(hello.sni.as_deref(), Some(&b"alpha.test"[..]));
    assert_eq!(hello.alpn, vec![b"h2".to_vec()]);
    assert!(!hello.ech);
    assert_eq!(hello.record_len, buf.len());
    check_all_prefixes(&buf);
}

#[test]
fn trailing_bytes_after_the_records_are_not_consumed() {
    let mut buf = Hello::new().bytes();
    let len = buf.len();
    buf.extend([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(parse_client_hello(&buf).unwrap().unwrap().record_len, len);
}

#[test]
fn split_over_records_reassembles() {
    let msg = Hello::new().message();
    for sizes in [
        &[1][..],
        &[2],
        &[3],
        &[4],
        &[5, 1000],
        &[40, 7],
        &[msg.len() - 1],
    ] {
        let buf = records(&msg, sizes);
        let hello = parse_client_hello(&buf).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some(&b"alpha.test"[..]), "{sizes:?}");
        assert_eq!(hello.record_len, buf.len());
        check_all_prefixes(&buf);
    }
}

#[test]
fn ech_no_sni_no_extensions() {
    let ech = Hello::new().ext(EXT_ECH, vec![0, 1, 2, 3]).bytes();
    assert!(parse_client_hello(&ech).unwrap().unwrap().ech);

    let no_sni = Hello {
        extensions: Some(vec![(16, alpn_ext(&[b"http/1.1"]))]),
        ..Hello::new()
    };
    let hello = parse_client_hello(&no_sni.bytes()).unwrap().unwrap();
    assert_eq!((hello.sni, hello.alpn), (None, vec![b"http/1.1".to_vec()]));

    let bare = Hello {
        extensions: None,
        ..Hello::new()
    }
    .bytes();
    let hello = parse_client_hello(&bare).unwrap().unwrap();
    assert_eq!((hello.sni, hello.alpn.len(), hello.ech), (None, 0, false));
    check_all_prefixes(&bare);
}

#[test]
fn not_tls() {
    for buf in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-x\r\n",
        &[0x16, 0x02, 0x00],
        &[0x16, 3, 0x10],
    ] {
        assert_eq!(parse_client_hello(buf), Ok(None), "{buf:?}");
    }
    for buf in [
        &[][..],
        &[0x16],
        &[0x16, 3],
        &[0x80],
        &[0x80, 0x2e],
        &[0x80, 0x2e, 0x01],
    ] {
        assert_eq!(
            parse_client_hello(buf),
            Err(SniffError::Incomplete),
            "{buf:?}"
        );
    }
    // A binary protocol with the high bit set is let go once it cannot be SSLv2.
    assert_eq!(parse_client_hello(&[0x80, 0x2e, 0x02]), Ok(None));
}

fn malformed(buf: &[u8]) -> &'static str {
    match parse_client_hello(buf) {
        Err(SniffError::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn malformed_shapes() {
    let big_ext = vec![0u8; 60 * 1024];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "sslv2 compatible",
            vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15],
        ),
        ("sslv2", vec![0x80, 0x2e, 0x01, 0x00, 0x02]),
        ("record version 3.9", {
            let mut b = Hello::new().bytes();
            b[2] = 9;
            b
        }),
        ("second record not handshake", {
            let mut b = records(&Hello::new().message(), &[20]);
            b[25] = 0x17;
            b
        }),
        (
            "empty record",
            [&[0x16, 3, 1, 0, 0][..], &Hello::new().bytes()].concat(),
        ),
        ("record over 16 KiB", vec![0x16, 3, 1, 0x40, 0x01]),
        ("not a client hello", {
            let mut b = Hello::new().bytes();
            b[5] = 2;
            b
        }),
        (
            "message over 64 KiB",
            vec![0x16, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x00],
        ),
        (
            "records over 64 KiB",
            Hello::new().ext(0x1234, big_ext).bytes(),
        ),
        ("data after hello in its record", {
            let mut msg = Hello::new().message();
            msg.extend([1, 2, 3]);
            records(&msg, &[usize::MAX])
        }),
        (
            "message length shorter than body",
            Hello {
                trailing: vec![0, 0],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "version 2.0",
            Hello {
                version: [2, 0],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "session id 33",
            Hello {
                session_id: vec![1; 33],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "no suites",
            Hello {
                suites: vec![],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "odd suites",
            Hello {
                suites: vec![0x13, 1, 0x13],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "no compression",
            Hello {
                compression: vec![],
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "duplicate sni",
            Hello::new().ext(0, sni_ext(b"evil.test")).bytes(),
        ),
        (
            "duplicate other extension",
            Hello::new()
                .ext(43, vec![2, 3, 4])
                .ext(43, vec![2, 3, 4])
                .bytes(),
        ),
        (
            "duplicate alpn",
            Hello::new().ext(16, alpn_ext(&[b"h2"])).bytes(),
        ),
        (
            "two names",
            Hello {
                extensions: Some(vec![(
                    0,
                    sni_list(&[(0, b"alpha.test"), (0, b"evil.test")]),
                )]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "non host_name type",
            Hello {
                extensions: Some(vec![(0, sni_list(&[(1, b"alpha.test")]))]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "zero length sni",
            Hello {
                extensions: Some(vec![(0, sni_ext(b""))]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "empty server_name extension",
            Hello {
                extensions: Some(vec![(0, vec![])]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "empty server_name list",
            Hello {
                extensions: Some(vec![(0, vec![0, 0])]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "sni list length lies",
            Hello {
                extensions: Some(vec![(0, {
                    let mut e = sni_ext(b"alpha.test");
                    e[1] += 1;
                    e
                })]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "sni name length lies",
            Hello {
                extensions: Some(vec![(0, {
                    let mut e = sni_ext(b"alpha.test");
                    e[4] += 1;
                    e
                })]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "bytes after sni list",
            Hello {
                extensions: Some(vec![(0, [sni_ext(b"a.test"), vec![0]].concat())]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "empty alpn list",
            Hello {
                extensions: Some(vec![(16, vec![0, 0])]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "empty alpn name",
            Hello {
                extensions: Some(vec![(16, alpn_ext(&[b"h2", b""]))]),
                ..Hello::new()
            }
            .bytes(),
        ),
        (
            "alpn name length lies",
            Hello {
                extensions: Some(vec![(16, vec![0, 3, 5, b'h', b'2'])]),
                ..Hello::new()
            }
            .bytes(),
        ),
    ];
    for (name, buf) in cases {
        let reason = std::panic::catch_unwind(|| malformed(&buf))
            .unwrap_or_else(|_| panic!("case {name:?} was not Malformed"));
        assert!(!reason.is_empty(), "{name}");
    }
}

/// Extension-block lengths that lie in either direction, and a truncated extension header.
#[test]
fn lying_extension_lengths() {
    let good = Hello::new().message();
    // Offset of the extensions length: header 4, version 2, random 32, sid 1+32, suites 2+4,
    // compression 1+1.
    let at = 4 + 2 + 32 + 33 + 6 + 2;
    let ext_len = u16::from_be_bytes([good[at], good[at + 1]]);
    for delta in [-3i32, -1, 1, 100] {
        let mut msg = good.clone();
        let lied = (i32::from(ext_len) + delta) as u16;
        msg[at..at + 2].copy_from_slice(&lied.to_be_bytes());
        let buf = records(&msg, &[usize::MAX]);
        malformed(&buf);
    }
    // The first extension's own length runs past the block.
    let mut msg = good.clone();
    msg[at + 4] = 0xff;
    malformed(&records(&msg, &[usize::MAX]));
}

#[test]
fn sni_bytes_are_returned_raw() {
    for name in [
        &b"ALPHA.test."[..],
        b"xn--bcher-kva.test",
        b"a\0b",
        b"127.0.0.1",
        b"\xff",
    ] {
        let buf = Hello {
            extensions: Some(vec![(0, sni_ext(name))]),
            ..Hello::new()
        }
        .bytes();
        assert_eq!(
            parse_client_hello(&buf).unwrap().unwrap().sni.as_deref(),
            Some(name)
        );
    }
}
