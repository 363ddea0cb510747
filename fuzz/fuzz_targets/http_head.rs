//! Fuzzes the HTTP/1 head sniffer: no panic, and every property in palisade_wire::invariants
//! (prefixes agree with the whole, head_len within the input and ending in CRLF CRLF, no CR/LF/NUL
//! in values, never both Content-Length and chunked, sniff agrees).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = palisade_wire::invariants::check_http_head(data) {
        panic!("{violation}");
    }
});
