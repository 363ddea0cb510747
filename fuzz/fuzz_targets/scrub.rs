//! The response scrubber: any split of the stream gives the same output, and no secret of the
//! set survives in it (the secrets are drawn from an alphabet the marker cannot overlap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_scrub::{MIN_PATTERN, Patterns};

fuzz_target!(|data: &[u8]| {
    // Byte 0: secret length; then the secret (mapped onto [a-z0-9-]); byte after: cut stride;
    // the rest: the stream.
    let Some((&len, rest)) = data.split_first() else { return };
    let len = usize::from(len % 32);
    if rest.len() < len + 1 {
        return;
    }
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let secret: Vec<u8> = rest[..len]
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()])
        .collect();
    let stride = usize::from(rest[len]).max(1);
    let stream = &rest[len + 1..];
    let Ok(Some(p)) = Patterns::new([secret.as_slice()]) else { return };
    // `fast`: each piece tries the no-copy path first, as the proxy does.
    let run = |cut: usize, fast: bool| {
        let mut s = p.stream();
        let mut out = Vec::new();
        for piece in stream.chunks(cut) {
            let unchanged = if fast { s.feed_unchanged(piece) } else { None };
            match unchanged {
                Some(n) => out.extend_from_slice(&piece[..n]),
                None => s.feed(piece, &mut out),
            }
        }
        s.finish(&mut out);
        out
    };
    let whole = run(stream.len().max(1), false);
    assert_eq!(whole, run(stride, false), "split every {stride} bytes");
    assert_eq!(whole, run(stride, true), "split every {stride} bytes, no-copy path");
    assert_eq!(whole, run(1, false), "byte by byte");
    assert_eq!(whole, run(1, true), "byte by byte, no-copy path");
    if secret.len() >= MIN_PATTERN {
        assert!(!whole.windows(secret.len()).any(|w| w == secret.as_slice()));
    }
});
