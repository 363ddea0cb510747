//! One async lock per sandbox, so state changes on the same sandbox (delete, pause, snapshot,
//! policy update, the resume an exec may need) happen one after the other: no exec into a
//! half-deleted sandbox, no policy update putting back the registry entry of a deleted one.
//! Each operation re-reads the store once it holds the lock, so whoever comes second sees the
//! first one's result (a 404 after a delete, a 409 for a wrong state).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// See the module doc. Entries go when the sandbox is deleted; a waiter still holding the old
/// `Arc` then finds the store row gone.
#[derive(Debug, Default)]
pub(super) struct SandboxLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SandboxLocks {
    pub(super) async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let m = {
            // A poisoned map only means another thread panicked while inserting; the map
            // itself is still consistent.
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(id.to_owned()).or_default())
        };
        m.lock_owned().await
    }

    /// Forgets `id`'s lock (call while holding it, once the sandbox is gone).
    pub(super) fn forget(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_id_serialises_other_ids_do_not() {
        let locks = Arc::new(SandboxLocks::default());
        let a = locks.lock("a").await;
        // Another sandbox is not held up.
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock("b")).await;
        assert!(b.is_ok());
        // The same one waits until the first guard goes.
        let l2 = Arc::clone(&locks);
        let waiter = tokio::spawn(async move { l2.lock("a").await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(got, Ok(Ok(_))));
        locks.forget("a");
        locks.forget("b");
        assert_eq!(locks.len(), 0);
    }
}
