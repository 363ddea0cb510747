//! The real control plane over recording platforms (`TestPlane`), called through its trait:
//! the order of a create, clean-up when a platform fails, a policy update reaching the kernel
//! rules and the registry, and each failing platform reaching the API as its own typed cause.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use palisade_netns::RecordingNetPlatform;
use palisade_policy::Policy;
use palisade_runtime::RuntimeCall;
use palisade_server::ApiError;
use palisade_server::control::{
    AfterSnapshot, CreateSandbox, CreateSnapshot, EnvVars, ListSandboxes, Listing, OrgId,
};
use palisade_server::plane::PlaneError;
use palisade_server::testing::TestPlane;

fn create(policy: &str) -> CreateSandbox {
    CreateSandbox {
        template_name: "system/host".into(),
        vcpu: 1,
        memory_mib: 512,
        timeout_secs: 60,
        auto_pause: false,
        env_vars: EnvVars::default(),
        network_policy: Some(Policy::from_json(policy.as_bytes()).unwrap()),
    }
}

async fn org(bed: &TestPlane) -> OrgId {
    bed.add_org("org-a", None).await.unwrap();
    OrgId(bed.plane.store().get_org_by_name("org-a").await.unwrap().id)
}

/// A test plane with one organisation and one sandbox (deny-all) in it: the directory that
/// must outlive the plane, the plane, the organisation and the sandbox's id.
async fn one_sandbox() -> (tempfile::TempDir, TestPlane, OrgId, String) {
    let dir = tempfile::tempdir().unwrap();
    let bed = TestPlane::new(dir.path()).await.unwrap();
    let org = org(&bed).await;
    let sb = bed
        .plane
        .create_sandbox(&org, create(r#"{"mode":"deny-all"}"#))
        .await
        .unwrap();
    (dir, bed, org, sb.record.sandbox.id)
}

async fn count(bed: &TestPlane, org: &OrgId) -> i64 {
    bed.plane
        .list_sandboxes(
            org,
            ListSandboxes {
                listing: Listing {
                    page: 1,
                    page_size: 10,
                    ..Listing::default()
                },
                ..ListSandboxes::default()
            },
        )
        .await
        .unwrap()
        .total
}

/// Programs and first arguments of the recorded commands, `ip netns`, `nft -f`…
fn commands(net: &RecordingNetPlatform) -> Vec<String> {
    net.calls()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.program,
                c.args.first().cloned().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn create_goes_userns_network_rules_then_container() {
    let dir = tempfile::tempdir().unwrap();
    let bed = TestPlane::new(dir.path()).await.unwrap();
    let org = org(&bed).await;
    let sb = bed
        .plane
        .create_sandbox(
            &org,
            create(r#"{"mode":"custom","allow_cidrs":["198.51.100.0/24"]}"#),
        )
        .await
        .unwrap();
    let ops: Vec<_> = bed.runtime.calls().iter().map(RuntimeCall::op).collect();
    assert_eq!(ops, ["prepare_userns", "create"]);
    let Some(RuntimeCall::Create(spec)) = bed.runtime.calls().pop() else {
        panic!("no create");
    };
    // The container joins the namespace the plane made, trusts its CA and resolves through
    // the host side; ICMP to allow_cidrs needs raw sockets.
    assert_eq!(
        spec.netns_path.unwrap().display().to_string(),
        format!("/var/run/netns/pls-{}", sb.record.sandbox.id)
    );
    assert!(spec.ca_pem.unwrap().contains("BEGIN CERTIFICATE"));
    assert!(spec.dns_server.is_some() && spec.net_raw);
    // The namespace before the rules, the rules (with the CIDR) before the container.
    let cmds = commands(&bed.net);
    let netns_add = cmds.iter().position(|c| c == "ip netns").unwrap();
    let nft = bed
        .net
        .calls()
        .iter()
        .position(|c| {
            c.program == "nft"
                && c.stdin
                    .as_deref()
                    .is_some_and(|s| s.contains("198.51.100.0/24"))
        })
        .unwrap();
    assert!(netns_add < nft, "{cmds:?}");
    let entry = bed.registry.by_id(&sb.record.sandbox.id).unwrap();
    assert_eq!((entry.version(), sb.record.policy_version), (1, 1));
}

#[tokio::test]
async fn a_container_that_fails_to_start_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let bed = TestPlane::new(dir.path()).await.unwrap();
    let org = org(&bed).await;
    bed.runtime.fail("create");
    let err = bed
        .plane
        .create_sandbox(&org, create(r#"{"mode":"deny-all"}"#))
        .await
        .unwrap_err();
    assert!(matches!(err, PlaneError::Runtime(_)), "{err:?}");
    // The API says which side failed, and no more; the log gets runc's words.
    let chain = err.chain().to_string();
    assert!(chain.contains("injected failure"), "{chain}");
    let api = ApiError::from(err);
    assert_eq!(api.status(), 500);
    assert_eq!(
        api.body().message,
        "internal error: the sandbox runtime failed"
    );
    // No row, no registry entry, the network and the container torn down.
    assert_eq!(count(&bed, &org).await, 0);
    assert!(bed.registry.is_empty());
    let ops: Vec<_> = bed.runtime.calls().iter().map(RuntimeCall::op).collect();
    assert_eq!(ops, ["prepare_userns", "create", "delete"]);
    let cmds = commands(&bed.net);
    assert!(cmds.iter().any(|c| c == "ip netns"), "{cmds:?}");
    assert!(
        bed.net
            .calls()
            .iter()
            .any(|c| c.args.starts_with(&["netns".to_owned(), "del".to_owned()])),
        "{cmds:?}"
    );
    // Once runc works again, a create succeeds (the failed one held nothing back).
    bed.runtime.heal("create");
    let sb = bed
        .plane
        .create_sandbox(&org, create(r#"{"mode":"deny-all"}"#))
        .await
        .unwrap();
    assert_eq!(count(&bed, &org).await, 1);
    assert!(bed.registry.by_id(&sb.record.sandbox.id).is_some());
}

#[tokio::test]
async fn a_failing_network_is_a_typed_500_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    // The first command (listing namespaces) fails, as `ip` without privileges would.
    let bed = TestPlane::with_net(dir.path(), RecordingNetPlatform::new().fail_on_call(1))
        .await
        .unwrap();
    let org = org(&bed).await;
    let err = bed
        .plane
        .create_sandbox(&org, create(r#"{"mode":"deny-all"}"#))
        .await
        .unwrap_err();
    assert!(matches!(err, PlaneError::Network(_)), "{err:?}");
    let api = ApiError::from(err);
    assert_eq!(api.status(), 500);
    assert_eq!(
        api.body().message,
        "internal error: the sandbox network could not be set up"
    );
    assert_eq!(count(&bed, &org).await, 0);
    assert!(bed.registry.is_empty());
    assert!(
        !bed.runtime
            .calls()
            .iter()
            .any(|c| matches!(c, RuntimeCall::Create(_)))
    );
}

#[tokio::test]
async fn a_policy_update_reaches_the_rules_and_the_registry() {
    let (_dir, bed, org, id) = one_sandbox().await;
    let before = bed.net.calls().len();
    let p = Policy::from_json(br#"{"mode":"custom","allow_cidrs":["203.0.113.0/24"]}"#).unwrap();
    let info = bed.plane.update_network_policy(&org, &id, p).await.unwrap();
    assert_eq!(info.version, 2);
    let new_rules: Vec<_> = bed.net.calls().split_off(before);
    assert!(
        new_rules.iter().any(|c| c.program == "nft"
            && c.stdin
                .as_deref()
                .is_some_and(|s| s.contains("203.0.113.0/24"))),
        "{new_rules:?}"
    );
    assert_eq!(bed.registry.by_id(&id).unwrap().version(), 2);
    // A sandbox of another organisation is not found, and nothing is applied for it.
    let other = OrgId("someone-else".into());
    let p = Policy::from_json(br#"{"mode":"allow-all"}"#).unwrap();
    let err = bed
        .plane
        .update_network_policy(&other, &id, p)
        .await
        .unwrap_err();
    assert!(matches!(err, PlaneError::NotFound("sandbox")), "{err:?}");
    assert_eq!(bed.registry.by_id(&id).unwrap().version(), 2);
}

fn echo() -> palisade_server::control::Execute {
    palisade_server::control::Execute {
        command: "echo hi".into(),
        cwd: None,
        env: EnvVars::default(),
        timeout_secs: Some(20),
    }
}

/// A command that fails because its sandbox was paused under it answers 409 even when another
/// command has resumed the sandbox by the time the failure is looked at (seen with real runc:
/// `cannot exec in a paused container` came back as a 500).
#[tokio::test]
async fn a_command_paused_under_it_is_a_conflict_even_once_resumed() {
    let (_dir, bed, org, id) = one_sandbox().await;
    let hold = bed.runtime.hold_next_exec();
    let first = tokio::spawn({
        let (plane, org, id) = (bed.plane.clone(), org.clone(), id.clone());
        async move { plane.execute(&org, &id, echo()).await }
    });
    // Past the plane's state check, before runc looks at the container: pause it, and let
    // the exec fail as runc does on a paused container (a runc error, not a typed state).
    hold.called().await;
    bed.plane.pause_sandbox(&org, &id).await.unwrap();
    bed.runtime.fail("exec");
    hold.let_look();
    hold.looked().await;
    bed.runtime.heal("exec");
    // A second command resumes the sandbox and runs before the first one's failure is read.
    let second = bed.plane.execute(&org, &id, echo()).await.unwrap();
    assert_eq!(second.exit_code, 0);
    hold.let_answer();
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, PlaneError::Conflict(_)), "{err:?}");
    assert_eq!(ApiError::from(err).status(), 409);
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_stored_leaves_no_archive() {
    let (dir, bed, org, id) = one_sandbox().await;
    // The runtime writes the archive; reading the sandbox's policy then fails.
    sqlx::query("DELETE FROM sandbox_policies WHERE sandbox_id = ?")
        .bind(&id)
        .execute(bed.plane.store().pool())
        .await
        .unwrap();
    let req = CreateSnapshot {
        name: Some("s1".into()),
        after: AfterSnapshot::KeepRunning,
    };
    let err = bed.plane.create_snapshot(&org, &id, req).await.unwrap_err();
    assert!(format!("{err:?}").contains("policy version"), "{err:?}");
    assert!(
        bed.runtime.calls().iter().any(|c| c.op() == "snapshot"),
        "the archive was written"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "archives left behind: {left:?}");
}
