//! The follower against hand-written streams, and its split-invariance as properties.

use proptest::prelude::*;

use super::*;
use crate::http::framing::{BAD_CL, CL_WITH_TE, DUPLICATE_CL, TE_NOT_CHUNKED};

const CLTE: &str = CL_WITH_TE;
const TE: &str = TE_NOT_CHUNKED;
const DUPCL: &str = DUPLICATE_CL;
const BADCL: &str = BAD_CL;

/// Feeds `data` whole, then a byte at a time: both must find the same heads and stop.
fn follow(data: &[u8]) -> (Vec<Verdict>, Option<Stop>) {
    let mut whole = Follower::default();
    let fed = whole.feed(data);
    let mut bytewise = Follower::default();
    let mut heads = Vec::new();
    let mut stop = None;
    for b in data {
        let f = bytewise.feed(std::slice::from_ref(b));
        heads.extend(f.heads);
        stop = stop.or(f.stop);
    }
    assert_eq!(heads, fed.heads, "{:?}", String::from_utf8_lossy(data));
    assert_eq!(stop, fed.stop, "{:?}", String::from_utf8_lossy(data));
    (fed.heads.into_iter().map(|(_, v)| v).collect(), fed.stop)
}

#[test]
fn table() {
    let get = "GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let h = "Host: a.test\r\n";
    let cases: Vec<(String, Vec<Verdict>, Option<Stop>)> = vec![
        (get.to_owned(), vec![Ok(())], None),
        (format!("{get}{get}"), vec![Ok(()), Ok(())], None),
        (format!("\r\n\r\n{get}"), vec![Ok(())], None),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello{get}"),
            vec![Ok(()), Ok(())],
            None,
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n{get}"),
            vec![Ok(()), Ok(())],
            None,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: Chunked\r\n\r\n\
                 5\r\nhello\r\n1A ;ext=\"x\"\r\n{}\r\n0\r\n\r\n{get}",
                "z".repeat(26)
            ),
            vec![Ok(()), Ok(())],
            None,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n{get}"
            ),
            vec![Ok(()), Ok(())],
            None,
        ),
        // Smuggling shapes: refused, and nothing after them is followed.
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{get}"
            ),
            vec![Err(CLTE)],
            Some(Stop::Head(CLTE)),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}transfer-encoding: chunked\r\ncontent-length: 60\r\n\r\n0\r\n\r\n{get}"
            ),
            vec![Err(CLTE)],
            Some(Stop::Head(CLTE)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n{get}"),
            vec![Err(TE)],
            Some(Stop::Head(TE)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n{get}"),
            vec![Err(TE)],
            Some(Stop::Head(TE)),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            vec![Err(TE)],
            Some(Stop::Head(TE)),
        ),
        (
            format!("POST / HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n"),
            vec![Err("Transfer-Encoding in an HTTP/1.0 request")],
            Some(Stop::Head("Transfer-Encoding in an HTTP/1.0 request")),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 0\r\nContent-Length: 48\r\n\r\n{get}"),
            vec![Err(DUPCL)],
            Some(Stop::Head(DUPCL)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            vec![Err(DUPCL)],
            Some(Stop::Head(DUPCL)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\nhello"),
            vec![Err(BADCL)],
            Some(Stop::Head(BADCL)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nhello"),
            vec![Err(BADCL)],
            Some(Stop::Head(BADCL)),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 99999999999999999999\r\n\r\n"),
            vec![Err(BADCL)],
            Some(Stop::Head(BADCL)),
        ),
        (
            "GET / HTTP/1.1\nHost: a.test\n\n".to_owned(),
            vec![Err("bare LF in the request head")],
            Some(Stop::Head("bare LF in the request head")),
        ),
        (
            format!("GET / HTTP/1.1\r\n{h}X-A: a\r\n b\r\n\r\n{get}"),
            vec![],
            Some(Stop::Head("the request head is malformed")),
        ),
        (
            format!("GET / HTTP/1.1\r\n{h}X-A: a\nb\r\n\r\n"),
            vec![],
            Some(Stop::Head("the request head is malformed")),
        ),
        // Bodies that cannot be followed.
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{get}"
            ),
            vec![Ok(())],
            Some(Stop::Body("bad chunk size")),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
            ),
            vec![Ok(())],
            Some(Stop::Body("chunk data not followed by CRLF")),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
            ),
            vec![Ok(())],
            Some(Stop::Body("bad chunk size")),
        ),
        (
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n{}\r\n",
                "f".repeat(17)
            ),
            vec![Ok(())],
            Some(Stop::Body("chunk size too large")),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"),
            vec![Ok(())],
            Some(Stop::Body("bare LF in the trailers")),
        ),
        (
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n"),
            vec![Ok(())],
            Some(Stop::Body("bare LF in a chunk extension")),
        ),
        // No longer HTTP/1 messages.
        (
            format!("GET /ws HTTP/1.1\r\n{h}Upgrade: websocket\r\n\r\n\x01\x05hello{get}"),
            vec![Ok(())],
            Some(Stop::Opaque),
        ),
        (
            format!("CONNECT a.test:443 HTTP/1.1\r\n{h}\r\n{get}"),
            vec![Ok(())],
            Some(Stop::Opaque),
        ),
        (
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00".to_owned(),
            vec![],
            Some(Stop::H2),
        ),
        // Bounds.
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD)),
            vec![],
            Some(Stop::Head("the request head is too large")),
        ),
        (format!("{}{get}", "\r\n".repeat(20)), vec![Ok(())], None),
        (
            format!("\r\n\r{get}"),
            vec![],
            Some(Stop::Head("the request head is malformed")),
        ),
        (
            "\r\n".repeat(MAX_HEAD),
            vec![],
            Some(Stop::Head("the request head is too large")),
        ),
    ];
    for (data, heads, stop) in &cases {
        let got = follow(data.as_bytes());
        assert_eq!(&got, &(heads.clone(), *stop), "{data:?}");
    }
}

#[test]
fn a_body_error_stops_handing_on_bytes_at_the_body() {
    let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let data = format!("{head}5\r\nhello\r\nzz\r\n");
    let fed = Follower::default().feed(data.as_bytes());
    assert_eq!(fed.pass, head.len());
    assert_eq!(fed.stop, Some(Stop::Body("bad chunk size")));
}

/// A valid request: method, body framing (none, length or chunks), trailers.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let chunks = proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 1..40), any::<bool>()),
        0..4,
    );
    (0u8..3, chunks, any::<bool>(), "[a-z]{1,8}").prop_map(|(kind, chunks, trailer, path)| {
        let mut out = Vec::new();
        match kind {
            0 => out.extend(format!("GET /{path} HTTP/1.1\r\nHost: a.test\r\n\r\n").bytes()),
            1 => {
                let body: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
                out.extend(
                    format!(
                        "POST /{path} HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .bytes(),
                );
                out.extend(body);
            }
            _ => {
                out.extend(
                    format!("PUT /{path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").bytes(),
                );
                for (c, ext) in &chunks {
                    let ext = if *ext { ";x=1" } else { "" };
                    out.extend(format!("{:X}{ext}\r\n", c.len()).bytes());
                    out.extend(c);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n");
                if trailer {
                    out.extend(b"X-Sum: 1\r\n");
                }
                out.extend(b"\r\n");
            }
        }
        out
    })
}

proptest! {
    #[test]
    fn valid_streams_are_followed_to_the_byte_however_split(
        reqs in proptest::collection::vec(request(), 1..6),
        cuts in proptest::collection::vec(any::<u16>(), 0..12),
    ) {
        let data: Vec<u8> = reqs.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let mut f = Follower::default();
        let mut heads = Vec::new();
        for w in points.windows(2) {
            let fed = f.feed(&data[w[0]..w[1]]);
            prop_assert_eq!(fed.pass, w[1] - w[0]);
            prop_assert_eq!(fed.stop, None);
            heads.extend(fed.heads);
        }
        let want: Vec<(u64, Verdict)> = (0..reqs.len() as u64).map(|i| (i, Ok(()))).collect();
        prop_assert_eq!(heads, want);
        // Exactly at a message boundary: nothing is left half-read.
        let at_boundary = matches!(&f.state, State::Head { buf, .. } if buf.is_empty());
        prop_assert!(at_boundary);
    }

    #[test]
    fn any_bytes_give_the_same_result_however_split(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        seed in request(),
        at in any::<u16>(),
    ) {
        // A valid request with garbage spliced in somewhere, and pure garbage.
        let mut spliced = seed.clone();
        let i = usize::from(at) % (spliced.len() + 1);
        spliced.splice(i..i, data.iter().copied());
        let _ = follow(&spliced);
        let _ = follow(&data);
    }
}
