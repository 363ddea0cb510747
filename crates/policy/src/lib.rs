//! Network policy: wire types, validation, canonical names, address classes and the compiled matcher. Pure code: no I/O, no tokio, no libc.

#![forbid(unsafe_code)]
