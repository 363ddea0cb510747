//! Per-sandbox certificate authority and on-demand leaf certificates for TLS interception, with a
//! leaf cache.
//!
//! Each sandbox gets its own CA ([`SandboxCa`], ECDSA P-256). The proxy terminates TLS only for
//! transform domains: [`SandboxCa::server_config`] gives a rustls `ServerConfig` that mints a leaf
//! for the exact SNI of each ClientHello (cached, see [`CacheStats`]). The CA certificate goes into
//! the sandbox's trust stores with [`trust::install`]; the CA key never does: it leaves this crate
//! only through [`SandboxCa::key_pem`], for sealing in the store.

#![forbid(unsafe_code)]

mod authority;
mod ca_pem;
mod cache;
mod error;
mod name;
mod resolver;
pub mod trust;

pub use authority::{LeafSettings, SandboxCa};
pub use cache::CacheStats;
pub use error::CaError;
pub use name::canonical_sni;
