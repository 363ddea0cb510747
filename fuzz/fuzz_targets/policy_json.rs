//! Policy JSON: parse, validate, normalise, re-validate, compile; see
//! `palisade_policy::fuzzing::policy_json` for the invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_policy::fuzzing::policy_json(data);
});
