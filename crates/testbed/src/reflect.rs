//! `/reflect` on the good server: an upstream that echoes the `Authorization` it received back in
//! every shape a careless or hostile service might, for the response-scrubbing tests. `?as=`
//! picks the shape: `body` (the value as sent, base64 and percent-encoded, one frame), `header`
//! (in response headers), `split` (the body in 3-byte frames, a few ms apart, so the value spans
//! many frames and TLS records), `sse` (an event stream whose value is cut across two writes),
//! `gzip`, `br`, `zstd` (the body compressed, with `Content-Encoding`).

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

type Body = BoxBody<Bytes, Infallible>;

/// The text `body` and the compressed shapes carry.
fn page(auth: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let mut out = b"raw=".to_vec();
    out.extend_from_slice(auth);
    out.extend_from_slice(b"\nb64=");
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(auth)
            .as_bytes(),
    );
    out.extend_from_slice(b"\nurl=");
    for &b in auth {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out.extend_from_slice(b"\n");
    out
}

fn frames(parts: Vec<Bytes>, gap: Duration) -> Body {
    let s = stream::unfold(parts.into_iter(), move |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(gap).await;
        Some((Ok::<_, Infallible>(Frame::data(next)), it))
    });
    BodyExt::boxed(StreamBody::new(s))
}

fn compress(how: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match how {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data)?;
            e.finish()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(data)?;
            }
            Ok(out)
        }
        _ => zstd::encode_all(data, 3),
    }
}

pub(crate) fn response(headers: &HeaderMap, query: &str) -> Response<Body> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let shape = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("as="))
        .unwrap_or("body");
    let mut resp = match shape {
        "header" => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")).boxed());
            if let Ok(v) = HeaderValue::from_bytes(&auth) {
                r.headers_mut()
                    .insert("x-reflected-authorization", v.clone());
                r.headers_mut().append("x-reflected-list", v);
            }
            r
        }
        "split" => {
            let parts = page(&auth).chunks(3).map(Bytes::copy_from_slice).collect();
            Response::new(frames(parts, Duration::from_millis(2)))
        }
        "sse" => {
            let event = [b"data: token=".as_slice(), &auth, b"\n\n"].concat();
            let cut = 12 + auth.len() / 2;
            let parts = vec![
                Bytes::copy_from_slice(&event[..cut]),
                Bytes::copy_from_slice(&event[cut..]),
                Bytes::from_static(b"data: done\n\n"),
            ];
            let mut r = Response::new(frames(parts, Duration::from_millis(50)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        how @ ("gzip" | "br" | "zstd") => match compress(how, &page(&auth)) {
            Ok(packed) => {
                let parts = packed.chunks(7).map(Bytes::copy_from_slice).collect();
                let mut r = Response::new(frames(parts, Duration::from_millis(1)));
                if let Ok(v) = HeaderValue::from_str(how) {
                    r.headers_mut().insert(header::CONTENT_ENCODING, v);
                }
                r
            }
            Err(_) => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"compress\n")).boxed());
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        },
        _ => Response::new(Full::new(Bytes::from(page(&auth))).boxed()),
    };
    if shape != "sse" {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}
