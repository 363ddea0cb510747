//! Name canonicalisation: canonical output, idempotent, insensitive to case and one trailing dot;
//! see `palisade_policy::fuzzing::canonical_name`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_policy::fuzzing::canonical_name(data);
});
