//! The authority a request names, checked before any decision is made on it.

use http::{Request, header};

/// The authority a request names: its Host header, or the absolute-form target's authority
/// when both agree. Userinfo, disagreement and a port other than the connection's are refused.
pub(crate) fn request_authority<B>(
    req: &Request<B>,
    orig_port: u16,
    scheme: &str,
) -> Result<String, String> {
    let uri_auth = req.uri().authority();
    let host_header = match req
        .headers()
        .get_all(header::HOST)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| "the Host header is not valid text".to_owned())?,
        ),
        _ => return Err("more than one Host header".into()),
    };
    if let Some(a) = uri_auth {
        if a.as_str().contains('@') {
            return Err("userinfo in the request target is not allowed".into());
        }
        if req
            .uri()
            .scheme_str()
            .is_some_and(|s| !s.eq_ignore_ascii_case(scheme))
        {
            return Err(format!(
                "only {scheme}:// targets are served on this connection"
            ));
        }
        if let Some(h) = host_header
            && !h.eq_ignore_ascii_case(a.as_str())
        {
            return Err("the request target and the Host header name different hosts".into());
        }
    }
    let authority = uri_auth
        .map(|a| a.as_str().to_owned())
        .or_else(|| host_header.map(str::to_owned))
        .ok_or_else(|| "the request names no host".to_owned())?;
    let parsed: http::uri::Authority = authority
        .parse()
        .map_err(|_| format!("invalid host {authority:?}"))?;
    if authority.contains('@') {
        return Err("userinfo in the Host header is not allowed".into());
    }
    // Whatever the parser tolerated must read back as exactly host[:port], so a garbled port
    // cannot slip past the port check (found by fuzzing: "host:443www").
    let canonical = match parsed.port_u16() {
        Some(port) => format!("{}:{port}", parsed.host()),
        None => parsed.host().to_owned(),
    };
    if !canonical.eq_ignore_ascii_case(&authority) {
        return Err(format!("invalid host {authority:?}"));
    }
    if let Some(port) = parsed.port_u16()
        && port != orig_port
    {
        return Err(format!(
            "the host names port {port} but the connection is to port {orig_port}"
        ));
    }
    Ok(parsed.host().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn table() {
        type Row<'a> = (
            &'a str,
            &'a [&'a str],
            u16,
            &'a str,
            Result<&'a str, &'a str>,
        );
        let rows: &[Row<'_>] = &[
            ("/", &["a.test"], 80, "http", Ok("a.test")),
            ("/", &["A.Test:80"], 80, "http", Ok("A.Test")),
            ("/x", &["a.test:8080"], 8080, "http", Ok("a.test")),
            (
                "/",
                &["a.test:81"],
                80,
                "http",
                Err("the host names port 81 but the connection is to port 80"),
            ),
            ("/", &[], 80, "http", Err("the request names no host")),
            (
                "/",
                &["a.test", "b.test"],
                80,
                "http",
                Err("more than one Host header"),
            ),
            ("http://a.test/x", &[], 80, "http", Ok("a.test")),
            ("http://a.test/x", &["a.test"], 80, "http", Ok("a.test")),
            (
                "http://a.test/x",
                &["b.test"],
                80,
                "http",
                Err("the request target and the Host header name different hosts"),
            ),
            (
                "https://a.test/x",
                &["a.test"],
                80,
                "http",
                Err("only http:// targets are served on this connection"),
            ),
            ("https://a.test/x", &["a.test"], 443, "https", Ok("a.test")),
            (
                "http://u@a.test/x",
                &[],
                80,
                "http",
                Err("userinfo in the request target is not allowed"),
            ),
            (
                "/",
                &["u@a.test"],
                80,
                "http",
                Err("userinfo in the Host header is not allowed"),
            ),
            // Whatever the parser tolerates must read back as host[:port] (found by fuzzing).
            (
                "/",
                &["a.test:443www"],
                443,
                "https",
                Err("invalid host \"a.test:443www\""),
            ),
            ("/", &["198.51.100.7"], 80, "http", Ok("198.51.100.7")),
            ("/", &["[2001:db8::1]:80"], 80, "http", Ok("[2001:db8::1]")),
        ];
        for (i, (target, hosts, port, scheme, want)) in rows.iter().enumerate() {
            let got = request_authority(&req(target, hosts), *port, scheme);
            let want = want.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn a_host_that_is_not_text_is_refused() {
        let r = Request::builder()
            .uri("/")
            .header(
                header::HOST,
                http::HeaderValue::from_bytes(b"a\xfftest").unwrap(),
            )
            .body(())
            .unwrap();
        assert_eq!(
            request_authority(&r, 80, "http"),
            Err("the Host header is not valid text".to_owned())
        );
    }
}
