use std::path::PathBuf;

/// Errors of this crate. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The sandbox id cannot go into a certificate subject.
    #[error("invalid sandbox id: {reason}")]
    InvalidSandboxId { reason: &'static str },

    /// The server name (SNI) a leaf was asked for is not a usable DNS name.
    #[error("invalid server name for a leaf certificate: {reason}")]
    InvalidName { reason: &'static str },

    /// The CA certificate PEM handed in is unusable.
    #[error("invalid CA certificate: {reason}")]
    InvalidCaCert { reason: String },

    /// The CA key PEM handed in is unusable (the key itself is never part of the message).
    #[error("invalid CA key: {reason}")]
    InvalidCaKey { reason: &'static str },

    /// The key does not belong to the certificate.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,

    /// Certificate generation failed (internal).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),

    /// rustls refused a key or certificate (internal).
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),

    /// Reading or writing a trust store file inside the sandbox root filesystem failed.
    #[error("trust store {path}: {source}")]
    TrustStore {
        /// Path inside the sandbox.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A trust store path inside the sandbox is something we refuse to touch.
    #[error("trust store {path}: {reason}")]
    TrustStoreRefused {
        /// Path inside the sandbox.
        path: PathBuf,
        reason: &'static str,
    },
}
