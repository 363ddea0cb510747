// The approval queue view (`on_unknown: "hold"`): pending approvals live from the server's
// event stream, one-click (or Tab and Enter) decisions, and the last decisions taken. The page's
// helpers come from app.js through showApprovals' context, so this module holds no key itself.

let $, el, post, signedOut, followStream;

const queue = { controller: null, timer: 0, tick: 0, rows: new Map() };

const DECISIONS = [
  ['allow-once', 'Allow once', 'allow'],
  ['allow-always', 'Allow always', 'allow quiet'],
  ['deny', 'Deny', 'deny'],
  ['deny-always', 'Deny always', 'deny quiet'],
];
const DECIDED_WORDS = {
  'allow-once': 'allowed once', 'allow-always': 'allowed always', deny: 'denied',
  'deny-always': 'denied always', timeout: 'timed out (denied)', removed: 'sandbox removed',
};

export function stopApprovals() {
  queue.controller?.abort();
  queue.controller = null;
  clearTimeout(queue.timer);
  clearInterval(queue.tick);
  queue.rows.clear();
}

function held(a) {
  const kinds = (a.kinds || []).map((k) => ({ dns: 'DNS query', tls: 'TLS', http: 'HTTP' }[k] || k));
  const ports = a.ports?.length ? ` to port ${a.ports.join(', ')}` : '';
  const n = a.held > 1 ? ` (${a.held} waiting)` : '';
  return `${kinds.join(', ')}${ports}${n}`;
}

function timeLeft(a) {
  return `${Math.max(0, Math.round((a.expires_ms - Date.now()) / 1000))} s`;
}

function queueCount() {
  const n = queue.rows.size;
  $('approvals-empty').hidden = n > 0;
  const badge = $('approvals-badge');
  badge.textContent = String(n);
  badge.hidden = n === 0;
}

function upsertApproval(a) {
  const old = queue.rows.get(a.id);
  if (old) {
    // Joined by another query or connection: update in place, so focus stays on its buttons.
    old.cells.held.textContent = held(a);
    old.approval = a;
    return;
  }
  const cells = {
    held: el('td', { text: held(a) }),
    left: el('td', { class: 'left', text: timeLeft(a) }),
  };
  const buttons = DECISIONS.map(([decision, label, cls]) => {
    const b = el('button', {
      type: 'button', class: `decide ${cls}`, 'data-decision': decision,
      'aria-label': `${label}: ${a.name} for sandbox ${a.sandbox_id}`,
    }, label);
    b.addEventListener('click', () => decideApproval(a.id, decision));
    return b;
  });
  const tr = el('tr', { 'data-id': a.id },
    el('td', { class: 'mono name', text: a.name }),
    el('td', {}, el('a', { href: `#/sandbox/${encodeURIComponent(a.sandbox_id)}`, class: 'mono', text: a.sandbox_id })),
    cells.held, el('td', { text: new Date(a.first_seen_ms).toLocaleTimeString() }), cells.left,
    el('td', { class: 'actions' }, ...buttons));
  queue.rows.set(a.id, { tr, cells, approval: a });
  $('approvals-table').tBodies[0].append(tr);
  queueCount();
}

function removeApproval(id, decision, a) {
  const row = queue.rows.get(id);
  // The POST's answer and the stream's `resolved` both report a decision: the first wins.
  if (!row) return;
  // Keep keyboard users in the list: focus moves to the next approval, or the heading.
  const hadFocus = row.tr.contains(document.activeElement);
  const next = row.tr.nextElementSibling || row.tr.previousElementSibling;
  row.tr.remove();
  queue.rows.delete(id);
  if (hadFocus) (next?.querySelector('button') || $('approvals-title')).focus();
  queueCount();
  if (!decision || !a) return;
  const item = el('li', {}, el('span', { class: `verdict verdict-${decision.startsWith('allow') ? 'allow' : 'deny'}`, text: DECIDED_WORDS[decision] || decision }),
    ' ', el('code', { text: a.name }), ` for sandbox ${a.sandbox_id} at ${new Date().toLocaleTimeString()}`);
  const list = $('approvals-decided');
  list.prepend(item);
  while (list.children.length > 20) list.lastElementChild.remove();
}

async function decideApproval(id, decision) {
  const row = queue.rows.get(id);
  if (!row) return;
  for (const b of row.tr.querySelectorAll('button')) b.disabled = true;
  const status = $('approvals-status');
  try {
    const d = await post(`/v1/approvals/${encodeURIComponent(id)}`, { decision });
    const version = d.policy_version ? ` (policy version ${d.policy_version})` : '';
    status.textContent = `${DECIDED_WORDS[decision]}: ${d.approval.name}${version}.`;
    removeApproval(id, decision, d.approval);
  } catch (e) {
    if (e.status === 401) return signedOut('Your key is no longer accepted. Sign in again.');
    if (e.status === 404) {
      status.textContent = `${row.approval.name} was already decided or timed out.`;
      removeApproval(id);
      return;
    }
    status.textContent = `Could not decide on ${row.approval.name}: ${e.message}`;
    for (const b of row.tr.querySelectorAll('button')) b.disabled = false;
  }
}

function followApprovals(signal) {
  followStream({
    url: '/v1/approvals/stream', pill: 'approvals-stream', state: queue,
    // The stream starts with every approval already waiting: start from an empty table.
    opened: () => { for (const id of [...queue.rows.keys()]) removeApproval(id); },
    message: (type, data) => {
      let v;
      try { v = JSON.parse(data); } catch { return; }
      if (type === 'pending') upsertApproval(v);
      else if (type === 'resolved') removeApproval(v.approval.id, v.decision, v.approval);
    },
  }, signal);
}

export function showApprovals(ctx) {
  ({ $, el, post, signedOut, followStream } = ctx);
  stopApprovals();
  $('approvals-table').tBodies[0].replaceChildren();
  $('approvals-status').textContent = '';
  queueCount();
  queue.controller = new AbortController();
  queue.tick = setInterval(() => {
    for (const r of queue.rows.values()) r.cells.left.textContent = timeLeft(r.approval);
  }, 1000);
  followApprovals(queue.controller.signal);
}
