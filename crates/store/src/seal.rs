//! Sealing secrets at rest: ChaCha20-Poly1305 with a random nonce per value and a key file
//! (`seal.key`, mode 0600) in the data directory.
//!
//! Every sealed value carries associated data naming its row ("policy:<sandbox>:<version>",
//! "ca:<sandbox>", ...), so a ciphertext copied into another row, or another column, fails to
//! open instead of handing one sandbox's secrets to another.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::{Zeroize, Zeroizing};

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "seal.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Format byte in front of every sealed value, so the scheme can change later.
const FORMAT_V1: u8 = 1;

/// Why sealing, opening or loading the key failed. Never carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("seal key file {path}: {source}")]
    KeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "seal key file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("seal key file {path} must hold exactly {KEY_LEN} bytes, found {len}")]
    KeyLength { path: PathBuf, len: usize },
    #[error("no randomness from the operating system")]
    Random,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with this key and binding (wrong key, row or tampered)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Plain bytes that came out of a sealed value: zeroed on drop, never printed.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// The AEAD key, loaded from (or created in) the data directory.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// Load `dir/seal.key`, creating it (mode 0600, fresh random key) when missing. Refuses a key
    /// file that group or others may read or write: a key anyone can read protects nothing.
    pub fn open_or_create(dir: &Path) -> Result<Self, SealError> {
        let path = dir.join(KEY_FILE);
        let io = |source| SealError::KeyIo {
            path: path.clone(),
            source,
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                getrandom::fill(key.as_mut()).map_err(|_| SealError::Random)?;
                file.write_all(key.as_ref()).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "created a new seal key");
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(&path),
            Err(e) => Err(io(e)),
        }
    }

    fn load(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::KeyIo {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealError::KeyMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN));
        fs::File::open(path)
            .and_then(|f| f.take(KEY_LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::KeyLength {
                path: path.to_path_buf(),
                len: bytes.len(),
            })?;
        let mut key = Zeroizing::new(key);
        let sealer = Self::from_key(&key);
        key.zeroize();
        Ok(sealer)
    }

    /// A sealer with the given key (tests, and a key handed over from elsewhere).
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Seal `plain`, bound to `binding` (the row's associated data).
    pub fn seal(&self, binding: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: binding.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a value sealed with the same `binding`.
    pub fn open(&self, binding: &str, sealed: &[u8]) -> Result<SecretBytes, SealError> {
        let (&format, rest) = sealed.split_first().ok_or(SealError::Malformed)?;
        if format != FORMAT_V1 || rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: binding.as_bytes(),
                },
            )
            .map(SecretBytes::new)
            .map_err(|_| SealError::Open)
    }
}

/// Associated data for each kind of sealed column. One place, so writer and reader agree.
pub(crate) mod binding {
    pub(crate) fn policy(sandbox: &str, version: i64) -> String {
        format!("policy:{sandbox}:{version}")
    }
    pub(crate) fn ca_key(sandbox: &str) -> String {
        format!("ca:{sandbox}")
    }
    pub(crate) fn sandbox_env(sandbox: &str) -> String {
        format!("env:{sandbox}")
    }
    pub(crate) fn snapshot_policy(snapshot: &str) -> String {
        format!("snapshot-policy:{snapshot}")
    }
    pub(crate) fn snapshot_env(snapshot: &str) -> String {
        format!("snapshot-env:{snapshot}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::from_key(&[7u8; 32]);
        let sealed = s.seal("policy:a:1", b"sk-secret").unwrap();
        assert_eq!(
            s.open("policy:a:1", &sealed).unwrap().expose(),
            b"sk-secret"
        );
        // Same plaintext twice gives different ciphertexts (fresh nonce).
        assert_ne!(sealed, s.seal("policy:a:1", b"sk-secret").unwrap());
        // Another row, another key, a flipped bit: all refused.
        assert!(matches!(
            s.open("policy:b:1", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            s.open("policy:a:2", &sealed),
            Err(SealError::Open)
        ));
        let other = Sealer::from_key(&[8u8; 32]);
        assert!(matches!(
            other.open("policy:a:1", &sealed),
            Err(SealError::Open)
        ));
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(s.open("policy:a:1", &bad), Err(SealError::Open)));
        assert!(matches!(
            s.open("policy:a:1", &[]),
            Err(SealError::Malformed)
        ));
        assert!(matches!(
            s.open("policy:a:1", &[9, 1, 2]),
            Err(SealError::Malformed)
        ));
        assert!(!format!("{:?}", s.open("policy:a:1", &sealed).unwrap()).contains("sk-"));
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::open_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal("x", b"v").unwrap();
        let b = Sealer::open_or_create(dir.path()).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap().expose(), b"v");
    }

    #[test]
    fn refuses_wide_mode_and_bad_length() {
        let dir = tempfile::tempdir().unwrap();
        Sealer::open_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::open_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, SealError::KeyMode { mode: 0o644, .. }),
            "{err}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Sealer::open_or_create(dir.path()),
            Err(SealError::KeyLength { len: 5, .. })
        ));
    }
}
