//! Start-up reconciliation: after a restart the store says which sandboxes exist; sandbox
//! networks left behind by ones it no longer knows are removed. (The nftables side needs no
//! helper: [`crate::nft::render_full`] rebuilds the table from the same state in one transaction.)

use crate::{NetPlatform, NetnsError, list_sandbox_netns, remove_sandbox_net};

/// Removes every `pls-<id>` network whose id is not in `keep`; returns the ids removed. Every
/// stale network is tried; the first error is returned after all were.
///
/// Namespaces are global (`/var/run/netns`), so call this only where this daemon owns every
/// `pls-*` name on the machine — never from tests running beside others.
pub fn remove_stale_sandbox_nets(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
    keep: &[&str],
) -> Result<Vec<String>, NetnsError> {
    let mut removed = Vec::new();
    let mut first_err = None;
    for id in list_sandbox_netns(p)? {
        if keep.contains(&id.as_str()) {
            continue;
        }
        match remove_sandbox_net(p, &id, host_netns) {
            Ok(()) => {
                tracing::info!(%id, "removed stale sandbox network");
                removed.push(id);
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot remove stale sandbox network");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingNetPlatform;

    #[test]
    fn removes_only_unknown_sandboxes() {
        let p = RecordingNetPlatform::new()
            .respond("ip netns list", "pls-keep (id: 1)\npls-old\nother\n");
        let removed = remove_stale_sandbox_nets(&p, Some("h"), &["keep"]).unwrap();
        assert_eq!(removed, ["old"]);
        let lines = p.lines();
        assert!(lines.contains(&"ip -n h link del plh-old".to_owned()));
        assert!(lines.contains(&"ip netns del pls-old".to_owned()));
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("keep") && l.contains("del"))
        );
    }

    #[test]
    fn nothing_stale_runs_only_the_listing() {
        let p = RecordingNetPlatform::new().respond("ip netns list", "pls-a\n");
        assert!(
            remove_stale_sandbox_nets(&p, None, &["a"])
                .unwrap()
                .is_empty()
        );
        assert_eq!(p.lines(), ["ip netns list"]);
    }
}
