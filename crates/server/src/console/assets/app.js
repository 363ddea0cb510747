// Palisade console: one module, no dependencies. Everything shown comes from the public API,
// called with the key kept in this tab's sessionStorage and sent only as a Bearer header.
// Text from the API (names chosen by code in a sandbox) only ever goes into textContent.

const KEY_SLOT = 'palisade.apiKey';
const MAX_ROWS = 1000;
const HISTORY = 200;
const REDACTED = '[REDACTED]';

import { showSuggestions } from './suggestions.js';
import { showApprovals as showApprovalsView, stopApprovals } from './approvals.js';

const $ = (id) => document.getElementById(id);

// ---- the key and the API ------------------------------------------------------------------

const key = {
  get: () => sessionStorage.getItem(KEY_SLOT),
  set: (k) => sessionStorage.setItem(KEY_SLOT, k),
  clear: () => sessionStorage.removeItem(KEY_SLOT),
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(k, extra = {}) {
  return { Authorization: `Bearer ${k}`, ...extra };
}

async function errorOf(res) {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && typeof body.message === 'string') message = body.message;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(res.status, message);
}

// A call with the stored key; a refused key sends the person back to the sign-in form.
async function api(path, { signal, k = key.get() } = {}) {
  const res = await fetch(path, {
    headers: headers(k, { Accept: 'application/json' }),
    cache: 'no-store', credentials: 'omit', signal,
  });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// A POST of a JSON body with the stored key (the suggestion's Apply).
async function post(path, body) {
  const res = await fetch(path, {
    method: 'POST',
    headers: headers(key.get(), { Accept: 'application/json', 'Content-Type': 'application/json' }),
    body: JSON.stringify(body), cache: 'no-store', credentials: 'omit',
  });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

function signedOut(message) {
  key.clear();
  stopLog();
  stopApprovals();
  showLogin(message);
}

// ---- small DOM helpers --------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? '') : d.toLocaleString();
}

function clock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? '') : d.toLocaleTimeString();
}

// ---- routing: #/sandboxes, #/sandbox/<id>, #/approvals, #/suggestions ---------------------

const views = {
  sandboxes: { nav: 'sandboxes', title: 'Sandboxes', show: showSandboxes },
  sandbox: { nav: 'sandboxes', title: 'Sandbox', show: showSandbox },
  approvals: { nav: 'approvals', title: 'Approvals', show: () => showApprovalsView({ $, el, post, signedOut, followStream }) },
  suggestions: { nav: 'suggestions', title: 'Suggestions', show: (id) => showSuggestions(id, { el, api, post, signedOut, $ }) },
  missing: { nav: '', title: 'Not found', show: () => {} },
};

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const name = parts[0] || 'sandboxes';
  if ((name === 'sandbox' || name === 'suggestions') && parts[1]) return { name, arg: parts[1] };
  if (name in views && name !== 'sandbox' && name !== 'missing') return { name };
  return { name: 'missing' };
}

function reveal(name) {
  for (const s of document.querySelectorAll('main > section[data-view]')) {
    s.hidden = s.dataset.view !== name;
  }
}

function route() {
  stopLog();
  stopApprovals();
  if (!key.get()) return showLogin();
  $('nav').hidden = false;
  $('sign-out').hidden = false;
  const { name, arg } = parseRoute();
  const view = views[name];
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${view.title} · Palisade console`;
  reveal(name);
  view.show(arg);
}

// ---- sign in ------------------------------------------------------------------------------

function showLogin(message) {
  $('nav').hidden = true;
  $('sign-out').hidden = true;
  document.title = 'Sign in · Palisade console';
  reveal('login');
  const err = $('login-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('login-key').setAttribute('aria-invalid', message ? 'true' : 'false');
  $('login-key').focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  const input = $('login-key');
  const k = input.value.trim();
  if (!k) return showLogin('Enter an API key.');
  const submit = $('login-submit');
  submit.disabled = true;
  try {
    // Check the key before keeping it: one cheap authenticated call.
    await api('/v1/sandboxes?page-size=1', { k });
    key.set(k);
    input.value = '';
    if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/sandboxes';
    route();
    $('main').focus();
  } catch (e) {
    showLogin(e.status === 401
      ? 'That API key was not accepted. Check it and try again.'
      : `Could not reach the API: ${e.message}`);
  } finally {
    submit.disabled = false;
  }
}

// ---- the sandbox list ---------------------------------------------------------------------

async function showSandboxes() {
  const status = $('sandboxes-status');
  const body = $('sandboxes-table').tBodies[0];
  status.textContent = 'Loading…';
  try {
    const list = await api('/v1/sandboxes?page-size=100&sort=created_at&order-by=desc');
    body.replaceChildren(...list.items.map((s) => el('tr', {},
      el('td', {}, el('a', { href: `#/sandbox/${encodeURIComponent(s.id)}`, class: 'mono' }, s.id)),
      el('td', {}, el('span', { class: `state state-${s.state}`, text: s.state })),
      el('td', { class: 'mono', text: s.template_id }),
      el('td', { text: s.policy_mode ?? '—' }),
      el('td', {}, el('time', { datetime: s.created_at, text: when(s.created_at) })),
    )));
    const more = list.total_items > list.items.length ? ` (newest ${list.items.length} shown)` : '';
    status.textContent = list.total_items === 0
      ? 'No sandboxes yet.'
      : `${list.total_items} sandbox${list.total_items === 1 ? '' : 'es'}${more}.`;
  } catch (e) {
    if (e.status === 401) return signedOut('Your key is no longer accepted. Sign in again.');
    status.textContent = `Could not load the sandboxes: ${e.message}`;
  }
}

// ---- one sandbox: facts, policy, live log -------------------------------------------------

const MODES = {
  'allow-all': 'every public destination is allowed; internal addresses stay refused.',
  'deny-all': 'nothing leaves the sandbox.',
  custom: 'only the domains, networks and transforms below are allowed.',
};

const AUDIT_NOTE = 'Audit mode: what the lists would deny is let through and logged as '
  + '"would be denied"; internal addresses, metadata and limits stay enforced.';

function list(items, empty) {
  if (!items || items.length === 0) return el('p', { class: 'hint', text: empty });
  return el('ul', { class: 'chips' }, ...items.map((i) => el('li', { class: 'mono', text: i })));
}

function table(caption, heads, rows) {
  return el('table', { class: 'kv' },
    el('caption', { text: caption }),
    el('thead', {}, el('tr', {}, ...heads.map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, ...rows.map((cells) => el('tr', {}, ...cells))));
}

const cell = (text, cls = 'mono') => el('td', { class: cls, text });

function transformCard(t) {
  const parts = [];
  // Values are secrets: the API redacts them, and the console never shows one whatever it gets.
  const inject = Object.keys(t.inject_headers || {});
  if (inject.length) {
    parts.push(table('Injected headers', ['Header', 'Value'],
      inject.map((h) => [cell(h), cell(REDACTED, 'mono redacted')])));
  }
  if (t.strip_headers?.length) {
    parts.push(table('Stripped headers', ['Header'], t.strip_headers.map((h) => [cell(h)])));
  }
  if (t.http_rules?.length) {
    parts.push(table('HTTP rules (first match wins)', ['Action', 'Method', 'Path'],
      t.http_rules.map((r) => [cell(r.action, ''), cell(r.method ?? 'any'), cell(r.path)])));
  }
  if (t.placeholders?.length) {
    parts.push(table('Placeholders', ['Token in the sandbox', 'In headers', 'Value'],
      t.placeholders.map((p) => [cell(p.placeholder), cell((p.headers || []).join(', ')),
        cell(REDACTED, 'mono redacted')])));
  }
  return el('article', { class: 'transform' },
    el('h4', {}, 'Transform for ', el('code', { text: t.domain })),
    el('div', { class: 'parts' }, ...parts));
}

function renderPolicy(doc) {
  const p = doc.network_policy || { mode: 'allow-all' };
  $('sandbox-audit').hidden = !p.audit;
  const transforms = p.transforms?.length
    ? p.transforms.map(transformCard) : [el('p', { class: 'hint', text: 'None.' })];
  $('policy').replaceChildren(
    el('p', { class: 'span' }, el('strong', { text: 'Mode ' }), el('code', { id: 'policy-mode', text: p.mode }),
      ` · version ${doc.version} · `, el('span', { class: 'hint', text: MODES[p.mode] || '' })),
    ...(p.audit ? [el('p', { class: 'span audit-note', id: 'policy-audit', text: AUDIT_NOTE })] : []),
    el('div', {},
      el('h3', { text: 'Allowed domains' }), list(p.allow_domains, 'None.'),
      el('h3', { text: 'Allowed networks (CIDRs)' }), list(p.allow_cidrs, 'None.')),
    el('div', {}, el('h3', { text: 'Transforms' }), ...transforms),
  );
}

async function showSandbox(id) {
  $('sandbox-id').textContent = id;
  $('sandbox-audit').hidden = true;
  $('sandbox-suggest').href = `#/suggestions/${encodeURIComponent(id)}`;
  $('sandbox-facts').replaceChildren();
  $('policy').replaceChildren(el('p', { class: 'hint', text: 'Loading…' }));
  $('log-table').tBodies[0].replaceChildren();
  $('sandbox-status').textContent = '';
  document.title = `Sandbox ${id} · Palisade console`;
  const base = `/v1/sandbox/${encodeURIComponent(id)}`;
  try {
    const [sb, policy] = await Promise.all([api(base), api(`${base}/network-policy`)]);
    const facts = [['State', sb.state], ['Template', sb.template_id], ['Created', when(sb.created_at)],
      ['vCPU', String(sb.vcpu)], ['Memory', `${sb.memory_mib} MiB`]];
    if (typeof sb.timeout === 'number') facts.push(['Timeout', `${sb.timeout} s`]);
    $('sandbox-facts').replaceChildren(...facts.map(([k, v]) => el('div', {}, el('dt', { text: k }), el('dd', { text: v }))));
    renderPolicy(policy);
  } catch (e) {
    if (e.status === 401) return signedOut('Your key is no longer accepted. Sign in again.');
    $('sandbox-status').textContent = e.status === 404
      ? 'No such sandbox in this organisation.' : `Could not load the sandbox: ${e.message}`;
    $('policy').replaceChildren();
    return;
  }
  startLog(id);
}

// ---- the live egress log ------------------------------------------------------------------

// Rules as the firewall names them (`default`, `domain:*.x`, `transform:x`, `http-rule:0`…).
function ruleWords(rule) {
  if (!rule) return '';
  const fixed = {
    default: 'no rule in the policy allows it',
    'deny-all': 'the policy mode is deny-all',
    'allow-all': 'the policy mode is allow-all',
    allow_cidrs: 'the address is inside allow_cidrs',
    'http-rules': 'no HTTP rule of the transform allows it',
  };
  if (rule in fixed) return fixed[rule];
  const i = rule.indexOf(':');
  const [kind, what] = i < 0 ? [rule, ''] : [rule.slice(0, i), rule.slice(i + 1)];
  switch (kind) {
    case 'domain': return `allowed domain ${what}`;
    case 'transform': return `transform for ${what}`;
    case 'dns-bound': return `address the sandbox's DNS served for ${what}`;
    case 'http-rule': return `HTTP rule #${Number(what) + 1} of the transform`;
    case 'approval': return `approval ${what}`;
    default: return `rule ${rule}`;
  }
}

export function explain(e) {
  const rule = ruleWords(e.rule);
  if (e.verdict === 'would-deny') {
    const why = e.reason || 'no reason was recorded';
    return `Would be denied, let through by audit mode: ${why}${rule ? ` (rule: ${rule}).` : '.'}`;
  }
  if (e.verdict === 'deny') {
    const why = e.reason || 'no reason was recorded';
    return `Denied: ${why}${rule ? ` (rule: ${rule}).` : '.'}`;
  }
  if (e.verdict === 'hold') return `Held for approval: ${e.reason || 'waiting for a decision'}.`;
  return rule ? `Allowed by ${rule}.` : 'Allowed.';
}

const log = { controller: null, seen: new Set(), timer: 0 };

function stopLog() {
  log.controller?.abort();
  log.controller = null;
  clearTimeout(log.timer);
  log.seen.clear();
}


function eventKey(e) {
  return [e.at_ms, e.verdict, e.protocol, e.name, e.dst_addr, e.dst_port, e.rule].join('|');
}

function destination(e) {
  // A DNS event's address is the firewall's own resolver, which tells a person nothing.
  if (e.protocol === 'dns') return 'DNS query';
  if (!e.dst_addr) return '';
  return e.dst_addr.includes(':') ? `[${e.dst_addr}]:${e.dst_port ?? ''}` : `${e.dst_addr}:${e.dst_port ?? ''}`;
}

const VERDICT_WORDS = { allow: 'allowed', deny: 'denied', 'would-deny': 'would deny', hold: 'held' };

function eventRow(e) {
  const name = el('td', { class: 'mono name' }, e.name || '—');
  const d = e.detail;
  if (d && typeof d === 'object' && d.method) {
    name.append(el('span', { class: 'sub', text: `${d.method} ${d.path ?? ''}${d.status ? ` → ${d.status}` : ''}` }));
  }
  const row = el('tr', { class: `ev ev-${e.verdict}` },
    el('td', {}, el('time', { datetime: e.at, text: clock(e.at) })),
    el('td', {}, el('span', { class: `verdict verdict-${e.verdict}`, text: VERDICT_WORDS[e.verdict] ?? e.verdict })),
    el('td', { text: e.protocol }),
    name,
    el('td', { class: 'mono', text: destination(e) }),
    el('td', { class: 'why', text: explain(e) }),
  );
  row.dataset.verdict = e.verdict;
  row.dataset.name = (e.name || '').toLowerCase();
  return row;
}

function visible(row) {
  const verdict = $('filter-verdict').value;
  const name = $('filter-name').value.trim().toLowerCase();
  return (!verdict || row.dataset.verdict === verdict) && (!name || row.dataset.name.includes(name));
}

function countRows() {
  const rows = $('log-table').tBodies[0].rows;
  let shown = 0;
  for (const r of rows) if (!r.hidden) shown += 1;
  $('log-count').textContent = rows.length === 0
    ? 'No egress yet: requests the sandbox makes appear here as they happen.'
    : `${shown} of ${rows.length} events shown.`;
}

function applyFilters() {
  for (const r of $('log-table').tBodies[0].rows) r.hidden = !visible(r);
  countRows();
}

// Newest first; `atEnd` for history, which arrives newest first too.
function addEvent(e, atEnd = false) {
  const k = eventKey(e);
  if (log.seen.has(k)) return;
  log.seen.add(k);
  const body = $('log-table').tBodies[0];
  const row = eventRow(e);
  row.hidden = !visible(row);
  if (atEnd) body.append(row); else body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(atEnd ? 0 : -1);
}

// Server-sent events read from a fetch() body: EventSource cannot send the Authorization
// header. Fields per the HTML spec: `event`, `data` (joined by newlines), comments ignored.
async function readSse(res, onMessage, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buf = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let m;
    // A CR at the very end may be half of a CRLF: wait for the next chunk.
    while ((m = /\r\n|\n|\r(?!$)/.exec(buf))) {
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      if (line === '') {
        if (data.length) onMessage(type || 'message', data.join('\n'));
        type = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v.startsWith(' ')) v = v.slice(1);
      if (field === 'event') type = v;
      else if (field === 'data') data.push(v);
    }
  }
}

// One live server-sent event stream, for the egress log and the approval queue: its state is
// shown in the pill `s.pill`; it reconnects after 1 s, doubling to 30 s, keeping the timer in
// `s.state.timer`, and stops on a 401 (signed out) or, with `s.gone`, a 404. `s.opened()` runs
// once subscribed, before `s.message(type, data)` sees the first event.
async function followStream(s, signal, attempt = 0) {
  const show = (text, kind) => {
    const pill = $(s.pill);
    pill.textContent = text;
    pill.dataset.state = kind;
  };
  try {
    show('Connecting…', 'connecting');
    const res = await fetch(s.url, {
      headers: headers(key.get(), { Accept: 'text/event-stream' }),
      cache: 'no-store', credentials: 'omit', signal,
    });
    if (!res.ok) throw await errorOf(res);
    await s.opened();
    show('Live', 'live');
    attempt = 0;
    await readSse(res, s.message, signal);
    if (signal.aborted) return;
    throw new Error('the stream ended');
  } catch (e) {
    if (signal.aborted) return;
    if (e.status === 401) return signedOut('Your key is no longer accepted. Sign in again.');
    if (e.status === 404 && s.gone) return show(s.gone, 'down');
    const wait = Math.min(30, 2 ** attempt);
    show(`Disconnected (${e.message}); retrying in ${wait} s`, 'down');
    s.state.timer = setTimeout(() => followStream(s, signal, attempt + 1), wait * 1000);
  }
}

function startLog(id) {
  stopLog();
  log.controller = new AbortController();
  countRows();
  const base = `/v1/sandbox/${encodeURIComponent(id)}/network/events`;
  const signal = log.controller.signal;
  followStream({
    url: `${base}?follow=true`, pill: 'log-stream', state: log, gone: 'Sandbox gone',
    // Subscribed from here on; history is read after, so nothing falls between the two.
    opened: async () => {
      const history = await api(`${base}?limit=${HISTORY}`, { signal });
      for (const e of history.items) addEvent(e, true);
      countRows();
    },
    message: (type, data) => {
      if (type !== 'egress') return;
      try { addEvent(JSON.parse(data)); } catch { return; }
      countRows();
    },
  }, signal);
}

// ---- start --------------------------------------------------------------------------------

function start() {
  $('login-form').addEventListener('submit', onLogin);
  $('sign-out').addEventListener('click', () => signedOut());
  $('sandboxes-refresh').addEventListener('click', showSandboxes);
  $('filter-verdict').addEventListener('change', applyFilters);
  $('filter-name').addEventListener('input', applyFilters);
  $('log-filters').addEventListener('submit', (ev) => ev.preventDefault());
  window.addEventListener('hashchange', route);
  route();
}

start();
