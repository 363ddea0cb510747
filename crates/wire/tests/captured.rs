//! ClientHellos captured from real clients on loopback (testdata/capture.py) and the hand-made
//! ones derived from them (testdata/handmade.py).

use palisade_wire::{SniffError, Sniffed, invariants, parse_client_hello, sniff};

struct Case {
    file: &'static str,
    bytes: &'static [u8],
    sni: Option<&'static [u8]>,
    alpn: &'static [&'static [u8]],
    ech: bool,
}

macro_rules! case {
    ($file:literal, $sni:expr, $alpn:expr, $ech:expr) => {
        Case {
            file: $file,
            bytes: include_bytes!(concat!("../testdata/", $file)),
            sni: $sni,
            alpn: $alpn,
            ech: $ech,
        }
    };
}

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const ALPHA: Option<&[u8]> = Some(b"alpha.test");

fn cases() -> Vec<Case> {
    vec![
        case!("curl.bin", ALPHA, H2_H1, false),
        case!("curl-idn.bin", Some(b"xn--bcher-kva.test"), H2_H1, false),
        case!("python.bin", ALPHA, &[], false),
        case!("python-alpn.bin", Some(b"beta.test"), H2_H1, false),
        case!("node.bin", ALPHA, &[], false),
        case!("openssl.bin", ALPHA, &[], false),
        case!("openssl-tls12.bin", ALPHA, &[], false),
        case!("openssl-nosni.bin", None, &[], false),
        case!("split-records.bin", ALPHA, H2_H1, false),
        case!("ech.bin", ALPHA, H2_H1, true),
    ]
}

#[test]
fn captured_hellos_parse() {
    for c in cases() {
        let hello = parse_client_hello(c.bytes).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), c.sni, "{}", c.file);
        let alpn: Vec<&[u8]> = hello.alpn.iter().map(Vec::as_slice).collect();
        assert_eq!(alpn, c.alpn, "{}", c.file);
        assert_eq!(hello.ech, c.ech, "{}", c.file);
        assert_eq!(hello.record_len, c.bytes.len(), "{}", c.file);
        assert_eq!(sniff(c.bytes), Ok(Sniffed::Tls(hello)), "{}", c.file);
    }
}

/// linkerd's `check_all_prefixes`: whatever TCP segment boundary the proxy peeks at, a prefix of
/// a real hello asks for more bytes.
#[test]
fn every_prefix_is_incomplete() {
    for c in cases() {
        for n in 0..c.bytes.len() {
            assert_eq!(
                parse_client_hello(&c.bytes[..n]),
                Err(SniffError::Incomplete),
                "{} {n}",
                c.file
            );
            assert_eq!(
                sniff(&c.bytes[..n]),
                Err(SniffError::Incomplete),
                "{} {n}",
                c.file
            );
        }
    }
}

#[test]
fn split_records_really_is_split() {
    let c = &cases()[8];
    assert_eq!(c.file, "split-records.bin");
    let headers = c.bytes.windows(3).filter(|w| *w == [0x16, 3, 1]).count();
    assert!(headers >= 3);
}

#[test]
fn invariants_hold() {
    for c in cases() {
        invariants::check_client_hello(c.bytes).unwrap_or_else(|e| panic!("{}: {e}", c.file));
    }
}

/// Every single-byte corruption of every captured hello is answered without a panic, and the
/// answer keeps the invariants.
#[test]
fn corrupted_hellos_keep_invariants() {
    for c in cases() {
        for i in 0..c.bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut buf = c.bytes.to_vec();
                buf[i] ^= x;
                // Prefix agreement on every prefix is O(n²): check the cheap properties on each
                // corruption and the full set on a sample.
                let _ = sniff(&buf);
                if i % 16 == 0 {
                    invariants::check_client_hello(&buf)
                        .unwrap_or_else(|e| panic!("{} byte {i} ^ {x:#x}: {e}", c.file));
                }
            }
        }
    }
}

/// The handshake message of a single-record capture.
fn message(record: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    assert_eq!(record.len(), 5 + len, "capture is one record");
    &record[5..]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any fragmentation of a real hello over handshake records parses to the same hello.
    #[test]
    fn any_record_split_parses_alike(
        which in 0usize..8,
        sizes in proptest::collection::vec(1usize..600, 1..12),
    ) {
        let c = &cases()[which];
        let msg = message(c.bytes);
        let mut buf = Vec::new();
        let mut rest = msg;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            buf.extend([0x16, 3, 1]);
            buf.extend(u16::try_from(n).unwrap().to_be_bytes());
            buf.extend(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        let whole = parse_client_hello(c.bytes).unwrap().unwrap();
        let split = parse_client_hello(&buf).unwrap().unwrap();
        proptest::prop_assert_eq!(&split.sni, &whole.sni);
        proptest::prop_assert_eq!(&split.alpn, &whole.alpn);
        proptest::prop_assert_eq!(split.record_len, buf.len());
    }

    /// Arbitrary bytes behind a TLS record header never break the invariants.
    #[test]
    fn arbitrary_records_keep_invariants(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
    ) {
        let mut buf = vec![0x16, 3, 1];
        buf.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        buf.extend(&body);
        proptest::prop_assert_eq!(invariants::check_client_hello(&buf), Ok(()));
    }
}
