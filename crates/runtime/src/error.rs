//! Errors of the runtime, each saying which side failed: the caller's request, the sandbox's
//! contents, or the host (runc, mounts, the file system).

use std::path::PathBuf;

/// Everything a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The request is invalid (caller's side): bad id, unknown template, bad limits.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No sandbox with this id.
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    /// A sandbox or template with this name already exists.
    #[error("{0:?} already exists")]
    AlreadyExists(String),
    /// The named template does not exist (or is not built yet).
    #[error("template {0:?} not found")]
    TemplateNotFound(String),
    /// The template is still used by sandboxes and cannot be deleted or renamed.
    #[error("template {0:?} is in use by sandbox {1:?}")]
    TemplateInUse(String, String),
    /// Building a template failed (host side: debootstrap, image unpacking).
    #[error("template build failed: {0}")]
    TemplateBuild(String),
    /// An image or snapshot archive given by the user is malformed (sandbox/user side).
    #[error("bad archive: {0}")]
    BadArchive(String),
    /// runc reported an error (host side).
    #[error("runc {op} failed for {id:?}: {message}")]
    Runc {
        /// The runc subcommand.
        op: &'static str,
        /// The container id.
        id: String,
        /// runc's own message (its stderr, trimmed and bounded).
        message: String,
    },
    /// A host file-system operation failed.
    #[error("host I/O on {path}: {source}")]
    Io {
        /// The path the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the sandbox CA into the root file system failed.
    #[error("installing the sandbox CA: {0}")]
    Ca(String),
    /// Building the OCI runtime spec failed (internal).
    #[error("OCI spec: {0}")]
    Spec(String),
    /// The sandbox is not in a state that allows this operation (e.g. exec while paused).
    #[error("sandbox {id:?} is {state}: cannot {op}")]
    State {
        /// The sandbox id.
        id: String,
        /// Its current state.
        state: String,
        /// What was attempted.
        op: &'static str,
    },
}

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| RuntimeError::io(path, e))
    }
}
