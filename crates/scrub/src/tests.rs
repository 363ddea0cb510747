//! The scrubber against hand-written cases, and its invariants as properties.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;

use super::*;

const SECRET: &[u8] = b"Bearer sk-test-4f9a2c77e1";

fn patterns(secrets: &[&[u8]]) -> Arc<Patterns> {
    Patterns::new(secrets.iter().copied()).unwrap().unwrap()
}

fn scrub_split(p: &Arc<Patterns>, data: &[u8], cuts: &[usize]) -> (Vec<u8>, u64) {
    scrub_split_with(p, data, cuts, false)
}

/// `fast`: each read tries [`Scrubber::feed_unchanged`] first, as the proxy does.
fn scrub_split_with(p: &Arc<Patterns>, data: &[u8], cuts: &[usize], fast: bool) -> (Vec<u8>, u64) {
    let mut s = p.stream();
    let mut out = Vec::new();
    let feed = |s: &mut Scrubber, piece: &[u8], out: &mut Vec<u8>| {
        if fast && let Some(n) = s.feed_unchanged(piece) {
            out.extend_from_slice(&piece[..n]);
            return;
        }
        s.feed(piece, out);
    };
    let mut at = 0;
    for &c in cuts {
        feed(&mut s, &data[at..c], &mut out);
        at = c;
    }
    feed(&mut s, &data[at..], &mut out);
    s.finish(&mut out);
    (out, s.replaced())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_echo_form_is_replaced() {
    let p = patterns(&[SECRET]);
    let token = &SECRET[7..];
    let mut bodies: Vec<Vec<u8>> = vec![
        [b"{\"auth\":\"".as_slice(), SECRET, b"\"}"].concat(),
        [b"token=".as_slice(), token, b"&x=1"].concat(),
        b"Authorization: Bearer%20sk-test-4f9a2c77e1".to_vec(),
        b"q=Bearer+sk-test-4f9a2c77e1".to_vec(),
    ];
    for prefix in ["", "a", "ab", "abc"] {
        let plain = [prefix.as_bytes(), SECRET, b" tail"].concat();
        bodies.push(STANDARD.encode(&plain).into_bytes());
        bodies.push(URL_SAFE.encode(&plain).into_bytes());
        let basic = [prefix.as_bytes(), b"user:", token].concat();
        bodies.push(STANDARD.encode(&basic).into_bytes());
    }
    for body in &bodies {
        let (out, n) = p.scrub_all(body);
        assert!(n >= 1, "{:?}", String::from_utf8_lossy(body));
        assert!(
            !contains(&out, token),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(contains(&out, MARKER));
    }
}

#[test]
fn ordinary_text_passes_unchanged_and_not_held_back() {
    let p = patterns(&[SECRET]);
    let body = b"data: {\"choices\":[{\"delta\":\"hello\"}]}\n\n";
    let mut s = p.stream();
    let mut out = Vec::new();
    s.feed(body, &mut out);
    // Nothing in an SSE event's tail can begin a secret: it goes out at once.
    assert_eq!(out, body);
    assert_eq!(s.held(), 0);
    assert_eq!(s.replaced(), 0);
}

#[test]
fn a_secret_split_over_reads_is_caught_and_its_prefix_is_held() {
    let p = patterns(&[SECRET]);
    let data = [b"x=".as_slice(), SECRET, b";"].concat();
    let mut s = p.stream();
    let mut out = Vec::new();
    s.feed(&data[..10], &mut out);
    assert_eq!(out, b"x=");
    assert_eq!(s.held(), 8);
    s.feed(&data[10..], &mut out);
    s.finish(&mut out);
    assert_eq!(out, b"x=[REDACTED];");
}

#[test]
fn short_values_give_no_patterns_and_debug_shows_none() {
    assert!(Patterns::new([b"abc".as_slice()]).unwrap().is_none());
    let p = patterns(&[SECRET]);
    let shown = format!("{p:?} {:?}", p.stream());
    assert!(!shown.contains("sk-test"), "{shown}");
}

fn secret() -> impl Strategy<Value = Vec<u8>> {
    // Lower-case, digits and '-': cannot overlap the marker, so "no secret in the output" holds.
    proptest::collection::vec(
        prop_oneof![b'a'..=b'z', b'0'..=b'9', Just(b'-'), Just(b' ')],
        6..24,
    )
}

proptest! {
    #[test]
    fn any_split_gives_the_same_output(
        secrets in proptest::collection::vec(secret(), 1..4),
        noise in proptest::collection::vec(any::<u8>(), 0..200),
        inserts in proptest::collection::vec((any::<u16>(), 0usize..4), 0..4),
        cuts in proptest::collection::vec(any::<u16>(), 0..10),
    ) {
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let Some(p) = Patterns::new(refs.iter().copied()).unwrap() else { return Ok(()); };
        let mut data = noise.clone();
        for (at, which) in &inserts {
            let s = &secrets[which % secrets.len()];
            let i = usize::from(*at) % (data.len() + 1);
            data.splice(i..i, s.iter().copied());
        }
        let whole = scrub_split(&p, &data, &[]);
        let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (data.len() + 1)).collect();
        points.sort_unstable();
        prop_assert_eq!(&scrub_split(&p, &data, &points), &whole);
        prop_assert_eq!(&scrub_split_with(&p, &data, &points, true), &whole);
        if data.len() <= 400 {
            let bytewise: Vec<usize> = (1..data.len()).collect();
            prop_assert_eq!(&scrub_split(&p, &data, &bytewise), &whole);
            prop_assert_eq!(&scrub_split_with(&p, &data, &bytewise, true), &whole);
        }
    }

    #[test]
    fn no_inserted_secret_survives(
        secrets in proptest::collection::vec(secret(), 1..4),
        noise in proptest::collection::vec(b'A'..=b'Z', 0..200),
        inserts in proptest::collection::vec((any::<u16>(), 0usize..4), 1..4),
        cuts in proptest::collection::vec(any::<u16>(), 0..10),
    ) {
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let Some(p) = Patterns::new(refs.iter().copied()).unwrap() else { return Ok(()); };
        let mut data = noise.clone();
        for (at, which) in &inserts {
            let s = &secrets[which % secrets.len()];
            let i = usize::from(*at) % (data.len() + 1);
            data.splice(i..i, s.iter().copied());
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (data.len() + 1)).collect();
        points.sort_unstable();
        let (out, _) = scrub_split_with(&p, &data, &points, true);
        for s in &secrets {
            if s.len() >= MIN_PATTERN {
                prop_assert!(!contains(&out, s), "{:?} in {:?}", String::from_utf8_lossy(s), String::from_utf8_lossy(&out));
            }
        }
    }
}
