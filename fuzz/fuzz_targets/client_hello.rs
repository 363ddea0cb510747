//! Fuzzes the ClientHello parser: no panic, and every property in palisade_wire::invariants
//! (prefixes agree with the whole, record_len within the input, refragmenting over other record
//! sizes gives the same hello, sniff agrees).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = palisade_wire::invariants::check_client_hello(data) {
        panic!("{violation}");
    }
});
