// The Suggestions view (#/suggestions/<id>): the smallest policy that would have allowed what a
// sandbox did, each entry with its evidence, and an Apply button that puts it in force live.
// Text from the API only ever goes into textContent (names are chosen inside sandboxes).

function bytes(n) {
  // Plain HTTP requests are not counted in bytes: zero reads as "not known".
  if (typeof n !== 'number' || n === 0) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function time(ms) {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleTimeString();
}

function entryRow(el, { entry, kind, covers, evidence: e }) {
  const ports = (e.ports || []).join(', ') || '—';
  const verdicts = Object.entries(e.verdicts || {}).map(([v, n]) => `${n} ${v}`).join(', ');
  return el('tr', {},
    el('th', { scope: 'row', class: 'mono', text: entry }),
    el('td', { text: kind }),
    el('td', { class: 'num', text: String(e.count ?? 0), title: verdicts }),
    el('td', { class: 'seen', text: e.first_seen_ms === e.last_seen_ms
      ? time(e.first_seen_ms) : `${time(e.first_seen_ms)} – ${time(e.last_seen_ms)}` }),
    el('td', { class: 'mono', text: ports }),
    el('td', { class: 'num', text: bytes(e.bytes_sent) }),
    el('td', { class: 'num', text: bytes(e.bytes_received) }),
    el('td', { class: 'mono covers', text: covers }));
}

function render(el, s) {
  const rows = [
    ...s.domains.map((d) => ({
      entry: d.domain,
      kind: d.domain.startsWith('*.') ? 'wildcard domain' : 'domain',
      covers: d.names.length > 1 ? d.names.join(', ') : '',
      evidence: d.evidence,
    })),
    ...s.cidrs.map((c) => ({
      entry: c.cidr,
      kind: c.source === 'kept' ? 'network (kept)' : 'address',
      covers: '',
      evidence: c.evidence,
    })),
  ];
  const parts = [];
  parts.push(el('p', { id: 'suggestion-summary' },
    `From ${s.events} recorded event${s.events === 1 ? '' : 's'}: `,
    el('strong', { text: `${s.domains.length} domain${s.domains.length === 1 ? '' : 's'}` }),
    ` and `,
    el('strong', { text: `${s.cidrs.length} network${s.cidrs.length === 1 ? '' : 's'}` }),
    ' would have allowed everything this sandbox did (mode custom, audit off).'));
  if (rows.length === 0) {
    parts.push(el('p', { class: 'hint', text: 'No traffic recorded yet: run the sandbox in audit mode first.' }));
  } else {
    parts.push(el('div', { class: 'table-wrap' }, el('table', { id: 'suggestion-table' },
      el('caption', { class: 'sr-only', text: 'Suggested entries with their evidence' }),
      el('thead', {}, el('tr', {}, ...['Entry', 'Kind', 'Events', 'Seen', 'Ports', 'Sent', 'Received', 'Covers']
        .map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, ...rows.map((r) => entryRow(el, r))))));
  }
  const transforms = s.network_policy.transforms || [];
  if (transforms.length) {
    parts.push(el('p', { class: 'hint' }, 'Kept as they are: transforms for ',
      ...transforms.map((t, i) => el('code', { text: `${t.domain}${i < transforms.length - 1 ? ', ' : ''}` })),
      ' (their secrets stay on the server).'));
  }
  if (s.unused.length) {
    parts.push(el('p', { id: 'suggestion-unused', class: 'hint' },
      `Dropped, no traffic recorded: ${s.unused.join(', ')}.`));
  }
  if (s.not_suggested.length) {
    parts.push(el('h2', { text: 'Not suggested' }),
      el('p', { class: 'hint', text: 'No list entry would allow these; they stay refused.' }),
      el('ul', { id: 'suggestion-not' }, ...s.not_suggested.map((n) => el('li', {},
        el('code', { text: n.what }), ` — ${n.reason} (${n.evidence.count} event${n.evidence.count === 1 ? '' : 's'})`))));
  }
  for (const p of s.problems) {
    parts.push(el('p', { class: 'error', text: `${p.field}: ${p.error}` }));
  }
  return parts;
}

// `ctx`: the console's helpers (el, api, post, signedOut, $).
export async function showSuggestions(id, ctx) {
  const { el, api, $ } = ctx;
  const status = $('suggestions-status');
  const body = $('suggestions-body');
  const form = $('suggestions-apply');
  body.replaceChildren();
  form.hidden = true;
  $('suggestions-result').textContent = '';
  if (!id) {
    $('suggestions-sandbox').textContent = '';
    status.textContent = 'Pick a sandbox: open it from the list and follow "Suggest a policy".';
    return;
  }
  $('suggestions-sandbox').textContent = id;
  $('suggestions-back').href = `#/sandbox/${encodeURIComponent(id)}`;
  document.title = `Suggestions for ${id} · Palisade console`;
  status.textContent = 'Reading the recorded traffic…';
  const base = `/v1/sandbox/${encodeURIComponent(id)}/network-policy/suggestion`;
  try {
    const s = await api(base);
    status.textContent = '';
    body.replaceChildren(...render(el, s));
    form.hidden = false;
    $('suggestions-apply-button').disabled = s.problems.length > 0;
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const button = $('suggestions-apply-button');
      button.disabled = true;
      const keep = $('suggestions-keep-audit').checked;
      try {
        const done = await ctx.post(`${base}/apply`, { keep_audit: keep });
        const audit = done.policy.network_policy.audit ? 'still on' : 'off';
        $('suggestions-result').textContent =
          `Applied: policy version ${done.policy.version} is enforced now; audit mode ${audit}.`;
      } catch (e) {
        if (e.status === 401) return ctx.signedOut('Your key is no longer accepted. Sign in again.');
        $('suggestions-result').textContent = `Could not apply: ${e.message}`;
      } finally {
        button.disabled = false;
      }
    };
  } catch (e) {
    if (e.status === 401) return ctx.signedOut('Your key is no longer accepted. Sign in again.');
    status.textContent = e.status === 404
      ? 'No such sandbox in this organisation.' : `Could not build a suggestion: ${e.message}`;
  }
}
