"""Drive a real Leap0 SDK (0.6.1 or 0.8) against a palisade API, e.g. the fake one:
    cargo run -p palisade-server --example fake_api -- 127.0.0.1:18080 &   # prints KEY
    .venv-leap0-0.8.0/bin/python crates/server/examples/sdk_check.py 18080 KEY
Exits non-zero on the first incompatibility. Loopback only."""
import sys, leap0
from leap0 import Leap0Client
v = leap0.__version__ if hasattr(leap0, "__version__") else "?"
port, key = sys.argv[1], sys.argv[2]
c = Leap0Client(api_key=key, base_url=f"http://127.0.0.1:{port}")
pol = {"mode": "custom", "allow_domains": ["pypi.org"], "transforms": [{"domain": "api.openai.com", "inject_headers": {"Authorization": "Bearer sk-SECRET"}}]}
new = hasattr(c.snapshots, "restore")
kw = dict(memory=2048, timeout=600) if new else dict(memory_mib=2048, timeout_min=10)
sb = c.sandboxes.create(template_name="system/debian:bookworm", vcpu=2, network_policy=pol, env_vars={"A": "1"}, **kw)
print("created", sb.id, sb.state, sb.network_policy)
assert "sk-SECRET" not in repr(sb.network_policy)
g = c.sandboxes.get(sb.id)
print("get", g.id, g.state, getattr(g, "memory", None) or getattr(g, "memory_mib", None))
lst = c.sandboxes.list(page_size=5)
print("list", lst.total_items, [i.id for i in lst.items])
r = sb.process.execute(command="echo hi")
print("exec", r.exit_code, repr(r.stdout))
if new:
    snap = sb.create_snapshot(name="s1")
else:
    snap = c.snapshots.create(sb, name="s1")
print("snapshot", snap.id, snap.name, snap.network_policy)
sl = c.snapshots.list()
print("snapshots", sl.total_items)
restored = c.snapshots.restore(snapshot_name="s1") if new else c.snapshots.resume(snapshot_name="s1")
print("restored", restored.id, restored.network_policy)
t = c.templates.create(name="mine", uri="host")
print("template", t.id, t.name)
c.templates.rename(t.id, name="mine2")
c.templates.delete(t.id)
try:
    c.sandboxes.get("nope")
except leap0.Leap0NotFoundError as e:
    print("404 ok:", e)
try:
    c.templates.create(name="mine3", uri="host")
    c.templates.create(name="mine3", uri="host")
except leap0.Leap0ConflictError as e:
    print("409 ok:", e)
try:
    c.sandboxes.create(template_name="missing")
except leap0.Leap0Error as e:
    print("400 ok:", e.status_code, e)
c.snapshots.delete(snap.id)
c.sandboxes.delete(sb.id)
bad = Leap0Client(api_key="pl_wrong", base_url=f"http://127.0.0.1:{port}")
try:
    bad.sandboxes.list()
except leap0.Leap0Error as e:
    print("401 ok:", e.status_code)
alt = Leap0Client(api_key=key, base_url=f"http://127.0.0.1:{port}", auth_header="leap0-authorization", bearer=False)
print("leap0-authorization:", alt.sandboxes.list().total_items)
print("ALL OK", v)
