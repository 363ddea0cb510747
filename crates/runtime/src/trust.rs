//! The sandbox CA goes into the merged root (so the template below stays untouched), through
//! `palisade-ca`, which confines every write to that root.

use std::path::Path;

use crate::error::{Result, RuntimeError};

/// Installs the CA certificate and returns the variables pointing clients at the bundle.
pub(crate) fn install(rootfs: &Path, ca_pem: &str) -> Result<Vec<(String, String)>> {
    let done =
        palisade_ca::trust::install(rootfs, ca_pem).map_err(|e| RuntimeError::Ca(e.to_string()))?;
    Ok(palisade_ca::trust::env_vars(&done))
}
