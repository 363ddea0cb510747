//! What can go wrong in the control plane, by cause. The plane never decides an HTTP status:
//! the API edge (`crate::error`) maps each variant to a status and a message in one place, and
//! logs the cause chain of the faults that are ours. A cause keeps its source error, so the log
//! says "the sandbox network could not be set up: nft …: Operation not permitted" where the
//! client reads only the first part.

use std::error::Error as StdError;
use std::fmt;

use palisade_ca::CaError;
use palisade_netns::NetnsError;
use palisade_runtime::RuntimeError;
use palisade_store::StoreError;

/// What the plane's calls answer.
pub type Result<T, E = PlaneError> = std::result::Result<T, E>;

/// See the module doc. The first group is the caller's doing (4xx), the second is the host's
/// (5xx).
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// A request value the wire layer cannot judge alone (an unknown template name, an
    /// unsupported template source, a spec the runtime refuses).
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A policy the plane built for the request (a suggestion over the live policy) does not
    /// validate; every problem names its field.
    #[error("{0}")]
    Policy(palisade_policy::ValidationErrors),
    /// The resource does not exist, or belongs to another organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The resource is in a state (or has a name) that forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The organisation's sandbox quota is reached.
    #[error("{0}")]
    Quota(String),
    /// The template is building, failed to build, or was never built; the message says which
    /// and how to go on.
    #[error("{0}")]
    TemplateNotReady(String),
    /// Every address of the sandbox pool is taken.
    #[error("no sandbox addresses left")]
    NoAddresses,
    /// The host's data disk is full (ENOSPC/EDQUOT anywhere in the runtime's cause chain).
    #[error("the host's data disk is full")]
    DiskFull(#[source] RuntimeError),
    /// runc, the overlay or an archive failed on the host.
    #[error("the sandbox runtime failed")]
    Runtime(#[source] RuntimeError),
    /// The database failed (a storage fault such as a full or read-only disk is told apart at
    /// the edge through [`StoreError::storage_fault`]).
    #[error("the store failed")]
    Store(#[source] StoreError),
    /// A network namespace, veth or nftables change failed.
    #[error("the sandbox network could not be set up")]
    Network(#[source] NetnsError),
    /// The sandbox's certificate authority could not be made or loaded.
    #[error("the sandbox's certificate authority failed")]
    Ca(#[source] CaError),
    /// A policy we stored earlier no longer parses.
    #[error("a stored policy is corrupt")]
    CorruptPolicy(#[source] Box<dyn StdError + Send + Sync>),
    /// A policy could not be serialised for the store.
    #[error("a policy could not be serialised")]
    Serialize(#[source] serde_json::Error),
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed")]
    Task(#[from] tokio::task::JoinError),
    /// The snapshot directory could not be made.
    #[error("the snapshot directory could not be made")]
    SnapshotDir(#[source] std::io::Error),
    /// A lock of the plane's own was poisoned by a panic.
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
}

impl PlaneError {
    /// A 400 on `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        PlaneError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The error and all its sources, for the log.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }
}

/// Displays an error and its sources, `outer: inner: innermost`.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl From<StoreError> for PlaneError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => PlaneError::NotFound(what),
            StoreError::Conflict(what) => PlaneError::Conflict(format!("{what} already exists")),
            other => PlaneError::Store(other),
        }
    }
}

/// The caller's mistakes keep their meaning; host failures stay runtime causes.
impl From<RuntimeError> for PlaneError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Invalid(m) => PlaneError::invalid("request", m),
            RuntimeError::NotFound(_) => PlaneError::NotFound("sandbox"),
            RuntimeError::TemplateNotFound(_) => PlaneError::NotFound("template"),
            RuntimeError::AlreadyExists(what) => {
                PlaneError::Conflict(format!("{what} already exists"))
            }
            RuntimeError::TemplateInUse(..) => PlaneError::Conflict("template is in use".into()),
            RuntimeError::BadArchive(m) => PlaneError::invalid("uri", m),
            RuntimeError::State { .. } => PlaneError::Conflict(e.to_string()),
            RuntimeError::Io { ref source, .. } if disk_full(source) => PlaneError::DiskFull(e),
            other => PlaneError::Runtime(other),
        }
    }
}

impl From<NetnsError> for PlaneError {
    fn from(e: NetnsError) -> Self {
        PlaneError::Network(e)
    }
}

impl From<CaError> for PlaneError {
    fn from(e: CaError) -> Self {
        PlaneError::Ca(e)
    }
}

/// ENOSPC or EDQUOT, however deep in the error's sources (tar and zstd wrap their writer's).
fn disk_full(e: &std::io::Error) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(28 | 122))
        {
            return true;
        }
        cur = err.source();
    }
    e.to_string().contains("No space left on device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause_and_display_only_the_first() {
        let e = PlaneError::from(NetnsError::Command {
            command: "nft -f -".into(),
            status: "exit status: 1".into(),
            stderr: "Operation not permitted".into(),
        });
        assert_eq!(e.to_string(), "the sandbox network could not be set up");
        let chain = e.chain().to_string();
        assert!(chain.starts_with("the sandbox network could not be set up: "));
        assert!(chain.contains("Operation not permitted"), "{chain}");
    }

    #[test]
    fn runtime_causes_keep_their_kind() {
        let full = RuntimeError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(matches!(PlaneError::from(full), PlaneError::DiskFull(_)));
        assert!(matches!(
            PlaneError::from(RuntimeError::NotFound("x".into())),
            PlaneError::NotFound("sandbox")
        ));
        assert!(matches!(
            PlaneError::from(RuntimeError::Runc {
                op: "create",
                id: "x".into(),
                message: "boom".into()
            }),
            PlaneError::Runtime(_)
        ));
    }
}
