"""The four examples of the Firewall page of the Leap0 docs, verbatim, then proof of each policy
from inside the sandbox, then snapshot -> restore with and without a policy override.

The testbed's DNS only serves the `test.` zone, so names like api.openai.com never resolve in
here: the verbatim examples prove the API accepts them (and redacts secrets); the policies are
proven on the testbed's own names (alpha.test, beta.test: the good server; evil.test: the
attacker) with the same shapes."""

import hashlib
import json

from leap0 import Leap0Client, NetworkPolicyMode

SECRET = "Bearer sk-proj-compat-7f3e"


def sh(sandbox, cmd):
    r = sandbox.process.execute(command=cmd)
    return r.exit_code, r.stdout + r.stderr


def reaches(sandbox, url, insecure=True):
    k = "-k " if insecure else ""
    code, _ = sh(sandbox, f"curl -fsS -o /dev/null --max-time 8 --connect-timeout 5 {k}{url}")
    return code == 0


def policy_dict(p):
    if hasattr(p, "model_dump"):
        return p.model_dump(mode="json")
    if hasattr(p, "to_dict"):
        return p.to_dict()
    return json.loads(json.dumps(p, default=lambda o: getattr(o, "__dict__", str(o))))


# 0.6.1 takes `memory_mib`, 0.8 takes `memory` (its create() rejects `memory_mib`): the examples
# are verbatim but for this one argument.
import inspect as _inspect

MEMORY = (
    {"memory_mib": 2048}
    if "memory_mib" in _inspect.signature(Leap0Client().sandboxes.create).parameters
    else {"memory": 2048}
)


# ---- the examples, verbatim -------------------------------------------------------------------


def test_spec_allow_all(cleanup):
    client = Leap0Client()
    sandbox = client.sandboxes.create(
        template_name="my-template",
        vcpu=2,
        **MEMORY,
        network_policy={"mode": NetworkPolicyMode.ALLOW_ALL},
    )
    cleanup.append(sandbox)
    print(sandbox.id, sandbox.network_policy)
    assert reaches(sandbox, "https://alpha.test/")
    assert reaches(sandbox, "http://evil.test/")


def test_spec_deny_all(cleanup):
    client = Leap0Client()
    sandbox = client.sandboxes.create(
        template_name="my-template",
        vcpu=2,
        **MEMORY,
        network_policy={"mode": NetworkPolicyMode.DENY_ALL},
    )
    cleanup.append(sandbox)
    print(sandbox.id, sandbox.network_policy)
    assert not reaches(sandbox, "https://alpha.test/")
    assert not reaches(sandbox, "http://198.51.100.10/")
    code, _ = sh(sandbox, "getent hosts alpha.test")
    assert code != 0


def test_spec_custom(cleanup):
    client = Leap0Client()
    sandbox = client.sandboxes.create(
        template_name="my-template",
        vcpu=2,
        **MEMORY,
        network_policy={
            "mode": NetworkPolicyMode.CUSTOM,
            "allow_domains": ["api.openai.com", "pypi.org"],
            "allow_cidrs": ["10.0.0.0/24"],
        },
    )
    cleanup.append(sandbox)
    print(sandbox.id, sandbox.network_policy)
    p = policy_dict(sandbox.network_policy)
    assert "api.openai.com" in json.dumps(p)
    # Nothing outside the policy is reachable.
    assert not reaches(sandbox, "https://alpha.test/")
    assert not reaches(sandbox, "http://evil.test/")


def test_spec_transforms(cleanup):
    client = Leap0Client()
    sandbox = client.sandboxes.create(
        template_name="my-template",
        vcpu=2,
        **MEMORY,
        network_policy={
            "mode": NetworkPolicyMode.CUSTOM,
            "allow_domains": ["api.openai.com"],
            "transforms": [
                {
                    "domain": "api.openai.com",
                    "inject_headers": {
                        "Authorization": "Bearer sk-proj-...",
                    },
                    "strip_headers": ["X-Debug"],
                }
            ],
        },
    )
    cleanup.append(sandbox)
    print(sandbox.id, sandbox.network_policy)
    text = json.dumps(policy_dict(sandbox.network_policy))
    assert "sk-proj" not in text, "injected secret leaked in the API response"
    assert "REDACTED" in text


# ---- the same shapes, proven on the testbed's names --------------------------------------------


def test_custom_domains_proven(client, cleanup):
    sb = client.sandboxes.create(
        template_name="my-template",
        network_policy={"mode": "custom", "allow_domains": ["alpha.test"]},
    )
    cleanup.append(sb)
    assert reaches(sb, "https://alpha.test/")
    assert reaches(sb, "http://alpha.test/")
    assert not reaches(sb, "https://beta.test/")
    assert not reaches(sb, "http://evil.test/")
    # The sandbox's choice of address does not matter: SNI alpha.test sent to the attacker's
    # address is dialled at the address the firewall resolved, so the real server answers.
    code, out = sh(sb, "curl -fsS -k --max-time 8 --resolve alpha.test:443:198.51.100.11 https://alpha.test/")
    assert code == 0 and '"server":"good"' in out, out


def test_transform_injects_and_strips(client, cleanup):
    sb = client.sandboxes.create(
        template_name="my-template",
        network_policy={
            "mode": "custom",
            "transforms": [
                {
                    "domain": "alpha.test",
                    "inject_headers": {"Authorization": SECRET},
                    "strip_headers": ["X-Debug"],
                }
            ],
        },
    )
    cleanup.append(sb)
    # No -k: the sandbox trusts its own CA (installed by palisade), and only it.
    code, out = sh(
        sb,
        "curl -sS --max-time 8 -H 'X-Debug: leak-me' -H 'Authorization: Bearer wrong' "
        "https://alpha.test/",
    )
    assert code == 0, out
    # The upstream got the secret (the echo's digest of the header says so); the sandbox only
    # ever sees the marker, since responses from a transform domain are scrubbed.
    assert hashlib.sha256(SECRET.encode()).hexdigest() in out, out
    assert SECRET not in out, out
    assert "[REDACTED]" in out, out
    assert "leak-me" not in out
    assert "Bearer wrong" not in out
    code, env = sh(sb, "env; cat /etc/resolv.conf")
    assert SECRET not in env
    assert not reaches(sb, "https://beta.test/")


def test_allow_cidrs(client, cleanup):
    sb = client.sandboxes.create(
        template_name="my-template",
        network_policy={"mode": "custom", "allow_cidrs": ["198.51.100.20/32"]},
    )
    cleanup.append(sb)
    assert reaches(sb, "http://198.51.100.20/")
    assert not reaches(sb, "http://198.51.100.10/")


# ---- snapshots carry the policy ----------------------------------------------------------------


def snapshot_of(client, sb, name):
    if hasattr(sb, "create_snapshot"):
        return sb.create_snapshot(name=name)
    return client.snapshots.create(sb, name=name)


def restore(client, name, **kw):
    if hasattr(client.snapshots, "restore"):
        return client.snapshots.restore(snapshot_name=name, **kw)
    return client.snapshots.resume(snapshot_name=name, **kw)


def test_snapshot_restore_keeps_and_overrides_policy(client, cleanup):
    import uuid

    name = "compat-" + uuid.uuid4().hex[:8]
    sb = client.sandboxes.create(
        template_name="my-template",
        network_policy={"mode": "custom", "allow_domains": ["alpha.test"]},
    )
    cleanup.append(sb)
    code, _ = sh(sb, "echo kept > /root/marker")
    assert code == 0
    snap = snapshot_of(client, sb, name)
    assert snap.name == name
    same = restore(client, name)
    cleanup.append(same)
    assert same.id != sb.id
    assert "alpha.test" in json.dumps(policy_dict(same.network_policy))
    assert sh(same, "cat /root/marker")[1].strip() == "kept"
    assert reaches(same, "https://alpha.test/")
    assert not reaches(same, "https://beta.test/")
    other = restore(client, name, network_policy={"mode": "deny-all"})
    cleanup.append(other)
    assert "deny-all" in json.dumps(policy_dict(other.network_policy))
    assert not reaches(other, "https://alpha.test/")
    client.snapshots.delete(snap.id)
