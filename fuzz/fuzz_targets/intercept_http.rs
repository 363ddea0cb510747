//! The intercepted HTTP path: malformed requests never panic, and the secret never reaches a
//! request that did not name the transform domain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_firewall::fuzzing::intercept_http(data);
});
