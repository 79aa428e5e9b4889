// The Univrs community dashboard: one page, plain JS, no framework and nothing from outside.
// Data comes from peers that may lie, so every string goes into the DOM as text, never HTML.
'use strict';

const TOKEN_KEY = 'univrs-token';
const EVENTS_EVERY_MS = 3000;
const LOG_MAX_LINES = 5000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 15000;
// The server sends a keepalive every 15 s: silence for longer means a dead connection.
const STREAM_SILENCE_MS = 45000;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  view: null,
  route: { page: 'overview' },
  routeKey: '',
  events: { key: '', list: null, error: null },
  log: { key: '', ctrl: null, follow: true, status: '', error: null, lines: 0 },
};

/* ---------- DOM building (text only, never HTML) ---------- */

function h(tag, attrs, ...kids) {
  return fill(document.createElement(tag), attrs, kids);
}

function s(tag, attrs, ...kids) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, kids);
}

// null, undefined and false mean "nothing": attributes left out, children skipped.
function fill(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null && v !== false) el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

/* ---------- Morphing: patch the live DOM so focus, scroll and selection survive ---------- */

function keyOf(n) {
  if (n.nodeType !== 1) return null;
  return n.id || n.getAttribute('data-key') || n.getAttribute('data-node') ||
    n.getAttribute('data-workload') || n.getAttribute('data-instance') ||
    n.getAttribute('data-line') || null;
}

function sameKind(a, b) {
  return a.nodeType === b.nodeType && a.nodeName === b.nodeName && a.namespaceURI === b.namespaceURI;
}

function morph(live, fresh) {
  if (live.nodeType !== 1) {
    if (live.nodeValue !== fresh.nodeValue) live.nodeValue = fresh.nodeValue;
    return;
  }
  for (const a of [...live.attributes]) {
    if (!fresh.hasAttribute(a.name)) live.removeAttribute(a.name);
  }
  for (const a of fresh.attributes) {
    if (live.getAttribute(a.name) !== a.value) live.setAttribute(a.name, a.value);
  }
  if (live.type === 'checkbox') live.checked = fresh.checked;
  // Content filled by something else than the view (the log) is left alone.
  if (!live.hasAttribute('data-keep')) morphChildren(live, fresh);
}

function morphChildren(live, fresh) {
  const freshKeys = new Set([...fresh.childNodes].map(keyOf).filter(Boolean));
  const keyed = new Map();
  for (const c of [...live.childNodes]) {
    const k = keyOf(c);
    if (k && !freshKeys.has(k)) c.remove();
    else if (k) keyed.set(k, c);
  }
  let cursor = live.firstChild;
  for (const f of [...fresh.childNodes]) {
    const k = keyOf(f);
    let match = null;
    if (k) {
      match = keyed.get(k) || null;
      keyed.delete(k);
      if (match && !sameKind(match, f)) { match.remove(); match = null; }
    } else if (cursor && !keyOf(cursor) && sameKind(cursor, f)) {
      match = cursor;
    }
    if (!match) { live.insertBefore(f, cursor); continue; }
    if (match === cursor) cursor = cursor.nextSibling;
    else live.insertBefore(match, cursor);
    morph(match, f);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

/* ---------- Words and numbers for people ---------- */

function num(n, digits = 2) {
  return Number(n).toLocaleString('en', { maximumFractionDigits: digits });
}

function credits(milli, long = false) {
  const n = Math.abs(milli) / 1000;
  const unit = long ? (n === 1 ? 'credit' : 'credits') : 'cr';
  return `${num(n, 3)} ${unit}`;
}

// Positive balances are owed to the account, negative ones it owes.
function balanceWords(milli, long = true) {
  if (milli == null) return '—';
  if (milli > 0) return `${long ? 'Is owed' : 'is owed'} ${credits(milli, long)}`;
  if (milli < 0) return `${long ? 'Owes' : 'owes'} ${credits(milli, long)}`;
  return long ? 'Settled' : 'settled';
}

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let v = Number(n) || 0;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${num(v, v < 10 ? 1 : 0)} ${units[i]}`;
}

function trustWords(rep) {
  if (rep == null) return 'Not rated yet';
  const word = rep >= 0.5 ? 'Trusted' : rep >= 0.25 ? 'Some trust' : 'Low trust';
  return `${word} ${num(rep, 2)}`;
}

const SEPTAL_WORDS = { Connected: 'Normal', Isolated: 'Isolated', Recovering: 'Re-testing' };
const ROLE_WORDS = { Leaf: 'Member', Nexus: 'Hub', PoteauMitan: 'Main hub' };
const CONNECTION_WORDS = {
  Direct: 'Direct', Relayed: 'Relayed (through another machine)', HolePunched: 'Hole-punched',
};
const REACH_WORDS = {
  Public: 'Yes, it has a public address', Private: 'No, it is behind a router', Unknown: 'Not known yet',
};

const septalWords = (septal) => (septal ? SEPTAL_WORDS[septal] || septal : '—');
const roleWords = (role) => (role ? ROLE_WORDS[role] || role : '—');

function phaseTone(phase) {
  if (['Running', 'Succeeded'].includes(phase)) return 'ok';
  if (['Failed'].includes(phase)) return 'bad';
  if (['Degraded', 'Progressing', 'Pending', 'Starting'].includes(phase)) return 'warn';
  return 'neutral';
}

function ago(iso) {
  const t = Date.parse(iso);
  if (!iso || Number.isNaN(t)) return '—';
  const sec = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (sec < 10) return 'just now';
  if (sec < 60) return `${sec} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ago`;
  const days = Math.floor(sec / 86400);
  return `${days} day${days === 1 ? '' : 's'} ago`;
}

function timeAgo(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h('time', { datetime: iso, title: Number.isNaN(d.getTime()) ? iso : d.toLocaleString() }, ago(iso));
}

function accountName(account) {
  const [kind, ...rest] = String(account).split('/');
  const name = rest.join('/');
  if (kind === 'node' && name) return { name, kind: 'machine', node: name };
  if (kind === 'namespace' && name) return { name, kind: 'group' };
  return { name: String(account), kind: '' };
}

/* ---------- Links ---------- */

const enc = encodeURIComponent;
const nodeHref = (name) => `#/nodes/${enc(name)}`;
const workloadHref = (ns, name) => `#/workloads/${enc(ns)}/${enc(name)}`;
const logsHref = (ns, name, index) => `${workloadHref(ns, name)}/logs/${index}`;

function latencyText(l) {
  return l.latencyMs == null ? null : `${num(l.latencyMs, 1)} ms`;
}

function nodeLink(name) {
  return name ? h('a', { href: nodeHref(name) }, name) : h('span', { class: 'muted' }, 'not placed yet');
}

/* ---------- Small pieces ---------- */

function badge(text, tone) {
  return h('span', { class: `badge ${tone}` }, text);
}

function readyBadge(ready) {
  return ready ? badge('Ready', 'ok') : badge('Not ready', 'bad');
}

// A bar drawn in SVG (no inline styles: the server's CSP forbids them); the number is text.
function bar(fraction, label, tone = '') {
  const f = Math.max(0, Math.min(1, Number(fraction) || 0));
  const high = f > 0.85 ? ' high' : '';
  return h('span', { class: 'meter' },
    s('svg', { class: `bar${high} ${tone}`, viewBox: '0 0 100 8', preserveAspectRatio: 'none', 'aria-hidden': 'true', focusable: 'false' },
      s('rect', { class: 'bar-track', width: 100, height: 8 }),
      s('rect', { class: 'bar-fill', width: (f * 100).toFixed(1), height: 8 })),
    h('span', { class: 'meter-text' }, label));
}

function cpuBar(n) {
  const frac = n.cpuCapacity > 0 ? n.cpuAllocated / n.cpuCapacity : 0;
  return bar(frac, `${num(n.cpuAllocated)} of ${num(n.cpuCapacity)} cores`);
}

function memoryBar(n) {
  const frac = n.memoryCapacity > 0 ? n.memoryAllocated / n.memoryCapacity : 0;
  return bar(frac, `${bytes(n.memoryAllocated)} of ${bytes(n.memoryCapacity)}`);
}

function trustBar(rep) {
  if (rep == null) return h('span', { class: 'muted' }, trustWords(rep));
  return bar(rep, trustWords(rep), 'trust');
}

function balanceText(milli) {
  const tone = milli > 0 ? 'pos' : milli < 0 ? 'neg' : 'zero';
  return h('span', { class: `amount ${tone}` }, balanceWords(milli));
}

function section(key, title, ...content) {
  return h('section', { id: `sec-${key}`, 'aria-labelledby': `h-${key}`, class: `panel ${key}` },
    h('h2', { id: `h-${key}` }, title), content);
}

// A table in its own horizontal scroller, reachable by keyboard, named by its caption.
// With srOnly, the table repeats a graph's facts for screen readers and is not shown.
function table(key, caption, head, rows, { hideCaption = false, empty = 'Nothing yet.', srOnly = false } = {}) {
  if (!rows.length) return h('p', { class: 'muted empty', 'data-key': `empty-${key}` }, empty);
  const wrap = srOnly ? { class: 'sr-only' } : { class: 'table-wrap', role: 'region', tabindex: 0, 'aria-labelledby': `cap-${key}` };
  return h('div', { ...wrap, 'data-key': `tbl-${key}` },
    h('table', null,
      h('caption', { id: `cap-${key}`, class: hideCaption ? 'sr-only' : null }, caption),
      h('thead', null, h('tr', null, head.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows)));
}

function row(attrs, first, ...cells) {
  return h('tr', attrs, h('th', { scope: 'row' }, first), cells.map((c) => h('td', null, c)));
}

function facts(pairs) {
  return h('dl', { class: 'facts' },
    pairs.filter(Boolean).map(([term, value]) => h('div', null, h('dt', null, term), h('dd', null, value))));
}

function conditionsTable(key, conditions) {
  const list = Array.isArray(conditions) ? conditions : [];
  return table(key, 'Conditions', ['Condition', 'Status', 'Reason', 'Message', 'Since'],
    list.map((c) => row({ 'data-key': `cond-${c.type}` }, c.type || '—',
      c.status === 'True' ? badge('Yes', c.type === 'Ready' ? 'ok' : 'neutral') :
        c.status === 'False' ? badge('No', c.type === 'Ready' ? 'bad' : 'neutral') : badge(c.status || 'Unknown', 'neutral'),
      c.reason || '—', c.message || '—', timeAgo(c.lastTransitionTime))),
    { empty: 'No conditions reported.', hideCaption: true });
}

function eventsSection(key) {
  const ev = state.events;
  let body;
  if (ev.error) body = h('p', { class: 'notice bad', role: 'alert' }, ev.error);
  else if (ev.list === null) body = h('p', { class: 'muted' }, 'Loading events…');
  else {
    body = table(key, 'Recent events, newest first', ['When', 'Kind', 'What', 'Details', 'Times', 'Reported by'],
      ev.list.map((e, i) => row({ 'data-key': `ev-${i}` }, timeAgo(e.lastSeen),
        e.type === 'Warning' ? badge('Warning', 'warn') : badge('Info', 'neutral'),
        e.reason || '—', h('span', { class: 'note' }, e.note || ''), String(e.count ?? 1), e.reporter || '—')),
      { empty: 'No recent events.', hideCaption: true });
  }
  return section(key, 'Recent events', body);
}

function notFound(what, name) {
  return [
    h('h1', { tabindex: -1 }, `${what} not found`),
    h('p', { class: 'notice warn' },
      name ? `There is no ${what.toLowerCase()} called “${name}” in the community right now. It may have left or been removed.`
        : 'This page does not exist.'),
    h('p', null, h('a', { href: '#/' }, 'Back to the overview')),
  ];
}

function loading() {
  const asking = !document.getElementById('auth').hidden;
  return [h('h1', { tabindex: -1 }, asking ? 'Access token needed' : 'Loading…'),
    h('p', { class: 'muted' }, asking ? 'The community appears here once the token is accepted.' : 'Waiting for the first news from the community.')];
}

/* ---------- Overview ---------- */

function overviewPage(v) {
  return [
    h('h1', { tabindex: -1, class: 'page-title glance' }, 'At a glance'),
    summaryTiles(v),
    h('div', { class: 'grid' },
      machinesSection(v), meshSection(v), moneySection(v), workloadsSection(v)),
  ];
}

function summaryTiles(v) {
  const ready = v.nodes.filter((n) => n.ready).length;
  const running = v.workloads.filter((w) => w.phase === 'Running').length;
  const lent = v.creditLines.reduce((sum, l) => sum + Math.max(0, l.balance), 0);
  const tile = (key, big, small) => h('li', { class: 'tile', 'data-key': key },
    h('span', { class: 'big' }, big), h('span', { class: 'small' }, small));
  return h('ul', { class: 'tiles', 'aria-label': 'Summary' },
    tile('t-machines', `${ready} of ${v.nodes.length}`, 'machines ready'),
    tile('t-workloads', `${running} of ${v.workloads.length}`, 'workloads running'),
    tile('t-credit', credits(lent, true), `owed on ${v.creditLines.length} credit line${v.creditLines.length === 1 ? '' : 's'}`));
}

function machinesSection(v) {
  const rows = v.nodes.map((n) => row({ 'data-node': n.name },
    [h('a', { href: nodeHref(n.name) }, n.name), ' ', readyBadge(n.ready), n.unschedulable ? [' ', badge('Paused', 'neutral')] : null],
    trustBar(n.reputation), septalCell(n.septal), roleWords(n.nexusRole),
    cpuBar(n), memoryBar(n), String(n.instances ?? 0),
    n.creditBalance == null ? '—' : balanceText(n.creditBalance)));
  return section('machines', 'Machines',
    table('machines', 'The machines of the community',
      ['Machine', 'Trust', 'Safety gate', 'Role', 'Processor in use', 'Memory in use', 'Running', 'Balance'],
      rows, { hideCaption: true, empty: 'No machines have joined yet.' }));
}

function septalCell(septal) {
  if (septal === 'Isolated') return badge(septalWords(septal), 'bad');
  if (septal === 'Recovering') return badge(septalWords(septal), 'warn');
  return septalWords(septal);
}

function workloadsSection(v) {
  const rows = v.workloads.map((w) => row({ 'data-workload': `${w.namespace}/${w.name}` },
    [h('a', { href: workloadHref(w.namespace, w.name) }, w.name), h('span', { class: 'ns' }, w.namespace)],
    `${w.readyReplicas} of ${w.replicas}`, badge(w.phase, phaseTone(w.phase)), instanceChips(w),
    w.creditSpent == null ? '—' : credits(w.creditSpent, true)));
  return section('workloads', 'Workloads',
    table('workloads', 'Workloads and the machines their instances run on',
      ['Workload', 'Ready', 'State', 'Runs on', 'Credit spent'], rows,
      { hideCaption: true, empty: 'No workloads yet.' }));
}

function instanceChips(w) {
  return h('ul', { class: 'chips' }, (w.instances || []).map((i) => h('li', {
    class: `chip ${i.ready ? 'ready' : 'waiting'}`, 'data-instance': i.name, 'data-node-of-instance': i.node || null,
  },
  h('span', { class: 'sr-only' }, `${i.name} on `),
  i.node ? h('a', { href: nodeHref(i.node) }, i.node) : 'no machine yet',
  i.ready ? h('span', { class: 'sr-only' }, ', ready') : h('span', { class: 'chip-state' }, (i.phase || 'waiting').toLowerCase()))));
}

/* ---------- The mesh graph ---------- */

function ringLayout(names, cx, cy, radius) {
  const pos = new Map();
  names.forEach((name, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / names.length;
    const r = names.length === 1 ? 0 : radius;
    pos.set(name, { x: cx + r * Math.cos(angle), y: cy + r * Math.sin(angle), angle });
  });
  return pos;
}

function meshSection(v) {
  return section('mesh', 'The mesh',
    h('p', { class: 'hint' }, 'How the machines reach each other.'),
    meshSvg(v), meshLegend(),
    table('links', 'Connections between machines', ['From', 'To', 'Connection', 'Delay'],
      v.links.map((l) => row({ 'data-key': `l-${l.from}-${l.to}` }, l.from, l.to,
        CONNECTION_WORDS[l.connection] || 'Unknown', latencyText(l) || '—')),
      { srOnly: true, empty: '' }));
}

function meshSvg(v) {
  const W = 480;
  const pos = ringLayout(v.nodes.map((n) => n.name), W / 2, 0, 100);
  const r = Math.max(10, Math.min(26, v.nodes.length > 1 ? 100 * Math.sin(Math.PI / v.nodes.length) * 0.55 : 26));
  // Room above and below the ring for two lines of label.
  const ys = [...pos.values()].map((p) => p.y);
  const top = Math.min(0, ...ys) - r - 40;
  const H = Math.max(0, ...ys) + r + 40 - top;
  const ready = v.nodes.filter((n) => n.ready).length;
  const label = `Mesh of ${v.nodes.length} machines, ${ready} ready, with ${v.links.length} connections.`;
  return s('svg', { id: 'mesh', class: 'graph', viewBox: `0 ${top.toFixed(0)} ${W} ${H.toFixed(0)}`, role: 'img', 'aria-labelledby': 'mesh-title' },
    s('title', { id: 'mesh-title' }, label),
    v.links.filter((l) => pos.has(l.from) && pos.has(l.to)).map((l) => meshLink(l, pos)),
    v.nodes.map((n) => meshNode(n, pos.get(n.name), r)));
}

function meshLink(l, pos) {
  const a = pos.get(l.from);
  const b = pos.get(l.to);
  const conn = l.connection || 'Unknown';
  const latency = latencyText(l);
  const mx = (a.x + b.x) / 2;
  const my = (a.y + b.y) / 2;
  return s('g', { 'data-key': `link-${l.from}-${l.to}` },
    s('line', {
      class: `mesh-link conn-${conn.toLowerCase()}`, 'data-from': l.from, 'data-to': l.to, 'data-connection': conn,
      x1: a.x.toFixed(1), y1: a.y.toFixed(1), x2: b.x.toFixed(1), y2: b.y.toFixed(1),
    }, s('title', null, `${l.from} to ${l.to}: ${CONNECTION_WORDS[conn] || 'unknown connection'}${latency ? `, ${latency}` : ''}`)),
    latency ? s('text', { class: 'link-label', x: mx.toFixed(1), y: (my + 4).toFixed(1), 'text-anchor': 'middle' }, latency) : null);
}

function meshNode(n, p, r) {
  const status = [n.ready ? 'ready' : 'not ready', n.septal === 'Isolated' ? 'isolated' : null].filter(Boolean).join(', ');
  const classes = ['mesh-node', n.ready ? 'is-ready' : 'is-down', n.septal === 'Isolated' ? 'is-isolated' : ''];
  // Labels go outwards from the ring so lines do not run through them.
  const below = Math.sin(p.angle) > -0.3;
  const side = Math.abs(Math.cos(p.angle)) > 0.8 ? Math.sign(Math.cos(p.angle)) : 0;
  const lx = p.x + side * (r + 12);
  const ly = side ? p.y - 2 : below ? p.y + r + 17 : p.y - r - 22;
  const anchor = side > 0 ? 'start' : side < 0 ? 'end' : 'middle';
  // No link inside: the picture is one image to assistive tech (the table above has the
  // links); a click on a machine still opens it (see start).
  return s('g', { class: classes.join(' ').trim(), 'data-node': n.name },
    s('title', null, `${n.name}: ${status}`),
    s('circle', { class: 'dot', cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: r.toFixed(1) }),
    n.septal === 'Isolated' ? s('circle', { class: 'ring', cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: (r + 5).toFixed(1) }) : null,
    s('text', { class: 'mark', x: p.x.toFixed(1), y: (p.y + 6).toFixed(1), 'text-anchor': 'middle' }, n.ready ? '✓' : '!'),
    s('text', { class: 'node-label', x: lx.toFixed(1), y: ly.toFixed(1), 'text-anchor': anchor },
      s('tspan', { class: 'name', x: lx.toFixed(1) }, n.name),
      s('tspan', { class: 'state', x: lx.toFixed(1), dy: '1.2em' }, status)));
}

function swatch(kind) {
  const line = (cls) => s('svg', { class: 'swatch', viewBox: '0 0 36 12', 'aria-hidden': 'true' },
    s('line', { class: `mesh-link-sample ${cls}`, x1: 2, y1: 6, x2: 34, y2: 6 }));
  const dot = (cls) => s('svg', { class: 'swatch', viewBox: '0 0 16 16', 'aria-hidden': 'true' },
    s('circle', { class: cls, cx: 8, cy: 8, r: 6 }));
  return { ready: () => dot('dot-ready'), down: () => dot('dot-down'), isolated: () => dot('dot-isolated'),
    direct: () => line('conn-direct'), relayed: () => line('conn-relayed'), holepunched: () => line('conn-holepunched') }[kind]();
}

function meshLegend() {
  const item = (kind, text) => h('li', null, swatch(kind), ' ', text);
  return h('ul', { class: 'legend', 'aria-label': 'Legend' },
    item('ready', 'Ready'), item('down', 'Not ready'), item('isolated', 'Isolated by its safety gate'),
    item('direct', 'Direct'), item('relayed', 'Relayed'), item('holepunched', 'Hole-punched'));
}

/* ---------- The money graph ---------- */

// Lenders on the left, borrowers on the right, accounts that do both in the middle.
function moneyColumns(v) {
  const lends = new Set(v.creditLines.map((l) => l.creditor));
  const borrows = new Set(v.creditLines.map((l) => l.debtor));
  const names = [...new Set([...v.accounts.map((a) => a.account), ...lends, ...borrows])];
  const cols = [[], [], []];
  for (const name of names) {
    const col = lends.has(name) && borrows.has(name) ? 1 : borrows.has(name) ? 2 : 0;
    cols[col].push(name);
  }
  return cols;
}

function moneySection(v) {
  const balances = v.accounts.map((a) => row({ 'data-key': `acct-${a.account}` },
    accountLabel(a.account), balanceText(a.balance), sparkline(a)));
  return section('money', 'Money',
    h('p', { class: 'hint' }, 'Who gives credit to whom: arrows go from the lender to the borrower, thicker when more is owed.'),
    v.creditLines.length ? moneySvg(v) : h('p', { class: 'muted' }, 'No credit lines yet.'),
    table('lines', 'Credit lines', ['Line', 'Lender', 'Borrower', 'Owed', 'Limit', 'Used'],
      v.creditLines.map((l) => row({ 'data-key': `cl-${l.name}` }, l.name, accountName(l.creditor).name,
        accountName(l.debtor).name, credits(l.balance, true), limitText(l), l.utilization || '—')),
      { srOnly: true, empty: '' }),
    table('balances', 'Balances', ['Account', 'Balance', 'Lately'], balances,
      { empty: 'No balances yet.' }));
}

function accountLabel(account) {
  const a = accountName(account);
  return [a.node ? h('a', { href: nodeHref(a.node) }, a.name) : a.name, a.kind ? h('span', { class: 'ns' }, a.kind) : null];
}

function limitText(l) {
  const eff = l.effectiveLimit;
  if (eff !== null && eff !== undefined && eff !== l.limit) return `${credits(eff, true)} now (of ${credits(l.limit, true)})`;
  return credits(l.limit, true);
}

function moneySvg(v) {
  const W = 480;
  const BOX_W = 150;
  const BOX_H = 46;
  const GAP = 18;
  const cols = moneyColumns(v);
  const tallest = Math.max(...cols.map((c) => c.length), 1);
  const H = tallest * (BOX_H + GAP) + GAP;
  const xs = [6, (W - BOX_W) / 2, W - BOX_W - 6];
  const boxes = new Map();
  cols.forEach((col, ci) => col.forEach((name, i) => {
    const top = (H - col.length * (BOX_H + GAP) + GAP) / 2 + i * (BOX_H + GAP);
    boxes.set(name, { x: xs[ci], y: top, col: ci });
  }));
  const max = Math.max(0, ...v.creditLines.map((l) => Math.abs(l.balance)));
  const balance = new Map(v.accounts.map((a) => [a.account, a.balance]));
  const drawn = v.creditLines.filter((l) => boxes.has(l.creditor) && boxes.has(l.debtor));
  const outs = portOffsets(drawn, boxes, 'creditor', 'debtor', BOX_H);
  const ins = portOffsets(drawn, boxes, 'debtor', 'creditor', BOX_H);
  return s('svg', { id: 'money', class: 'graph', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'money-title' },
    s('title', { id: 'money-title' }, `${v.creditLines.length} credit lines between ${boxes.size} accounts; the same facts are in the Credit lines table.`),
    drawn.map((l) => creditLine(l, boxes.get(l.creditor), boxes.get(l.debtor), max, BOX_W, BOX_H, outs.get(l), ins.get(l))),
    [...boxes].map(([name, b]) => accountBox(name, b, balance.get(name) ?? 0, BOX_W, BOX_H)));
}

// Where lines leave or enter a box: spread along its side, in the order of their other ends,
// so arrows into one borrower do not pile up on one point.
function portOffsets(lines, boxes, end, other, bh) {
  const groups = new Map();
  for (const l of lines) groups.set(l[end], [...(groups.get(l[end]) || []), l]);
  const offsets = new Map();
  for (const list of groups.values()) {
    list.sort((a, b) => boxes.get(a[other]).y - boxes.get(b[other]).y);
    const step = Math.min(12, (bh - 16) / Math.max(1, list.length - 1));
    list.forEach((l, i) => offsets.set(l, (i - (list.length - 1) / 2) * step));
  }
  return offsets;
}

function bezierAt(t, a, b, c, d) {
  const u = 1 - t;
  return u * u * u * a + 3 * u * u * t * b + 3 * u * t * t * c + t * t * t * d;
}

function creditLine(l, from, to, max, bw, bh, dy0, dy3) {
  const width = 2 + (max > 0 ? 8 * Math.sqrt(Math.abs(l.balance) / max) : 0);
  const head = Math.max(10, width * 1.6);
  const x0 = from.x + bw;
  const y0 = from.y + bh / 2 + dy0;
  const y3 = to.y + bh / 2 + dy3;
  // Forwards into the borrower's left side, or around into its right side when it is not further right.
  const forward = to.x > from.x;
  const tip = forward ? to.x - 2 : to.x + bw + 2;
  const x3 = forward ? tip - head : tip + head;
  const bend = forward ? Math.max(30, (x3 - x0) / 2) : 60;
  const c2 = forward ? x3 - bend : x3 + bend;
  const d = `M${x0},${y0.toFixed(1)} C${(x0 + bend).toFixed(1)},${y0.toFixed(1)} ${c2.toFixed(1)},${y3.toFixed(1)} ${x3.toFixed(1)},${y3.toFixed(1)}`;
  const arrow = `M${tip},${y3.toFixed(1)} L${x3},${(y3 - head * 0.6).toFixed(1)} L${x3},${(y3 + head * 0.6).toFixed(1)} Z`;
  // The label sits near the lender, where lines from different lenders are still apart.
  const mx = bezierAt(0.3, x0, x0 + bend, c2, x3);
  const my = bezierAt(0.3, y0, y0, y3, y3);
  const text = `${num(l.balance / 1000, 3)} / ${num(l.limit / 1000, 3)} cr`;
  return s('g', { class: 'credit-line', 'data-line': l.name },
    s('title', null, `${accountName(l.creditor).name} lends to ${accountName(l.debtor).name}: ${credits(l.balance, true)} owed of a ${credits(l.limit, true)} limit`),
    s('path', { class: 'flow', d, 'stroke-width': width.toFixed(1) }),
    s('path', { class: 'arrow', d: arrow }),
    s('text', { class: 'flow-label', x: mx.toFixed(1), y: (my - width / 2 - 4).toFixed(1), 'text-anchor': 'middle' }, text));
}

function accountBox(account, b, balance, bw, bh) {
  const a = accountName(account);
  const tone = balance > 0 ? 'pos' : balance < 0 ? 'neg' : 'zero';
  const short = a.name.length > 18 ? `${a.name.slice(0, 17)}…` : a.name;
  return s('g', { class: `account ${tone}`, 'data-key': `box-${account}` },
    s('title', null, `${a.name} (${a.kind || 'account'}): ${balanceWords(balance)}`),
    s('rect', { x: b.x, y: b.y.toFixed(1), width: bw, height: bh, rx: 8 }),
    s('text', { class: 'acct-name', x: b.x + 10, y: (b.y + 19).toFixed(1) }, short),
    s('text', { class: 'acct-balance', x: b.x + 10, y: (b.y + 36).toFixed(1) }, balanceWords(balance, false)));
}

function sparkline(a) {
  const pts = (a.history || []).filter((p) => Array.isArray(p) && p.length === 2);
  if (pts.length < 2) pts.push([Date.now(), a.balance], [Date.now() + 1, a.balance]);
  const W = 100;
  const H = 24;
  const t0 = pts[0][0];
  const t1 = pts[pts.length - 1][0];
  const lo = Math.min(0, ...pts.map((p) => p[1]));
  const hi = Math.max(0, ...pts.map((p) => p[1]));
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - 4) + 2 : W / 2);
  const y = (b) => (hi > lo ? H - 2 - ((b - lo) / (hi - lo)) * (H - 4) : H / 2);
  const points = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
  const first = pts[0][1];
  const label = first === a.balance ? `Steady at ${balanceWords(a.balance).toLowerCase()}`
    : `From ${balanceWords(first).toLowerCase()} to ${balanceWords(a.balance).toLowerCase()}`;
  return s('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label },
    s('title', null, label),
    s('line', { class: 'zero', x1: 0, x2: W, y1: y(0).toFixed(1), y2: y(0).toFixed(1) }),
    s('polyline', { class: a.balance < 0 ? 'neg' : 'pos', points }));
}

/* ---------- A machine's page ---------- */

function nodePage(v, name) {
  const n = v.nodes.find((x) => x.name === name);
  if (!n) return notFound('Machine', name);
  const runs = v.workloads.flatMap((w) => (w.instances || []).filter((i) => i.node === n.name).map((i) => ({ w, i })));
  const links = v.links.filter((l) => l.from === n.name || l.to === n.name);
  return [
    h('h1', { tabindex: -1, class: 'page-title' }, n.name, ' ', readyBadge(n.ready)),
    h('p', { class: 'lead' }, n.ready ? 'This machine is ready to run work.'
      : `This machine is not ready${n.readyMessage || n.readyReason ? `: ${n.readyMessage || n.readyReason}` : '.'}`),
    h('div', { class: 'grid detail' },
      section('about', 'About this machine', nodeFacts(n)),
      h('div', { class: 'stack', 'data-key': 'side' },
        section('conditions', 'Conditions', conditionsTable('node-conditions', n.conditions)),
        nodeLinksSection(n, links)),
      section('runs', 'What runs here',
        table('runs', `Instances on ${n.name}`, ['Instance', 'Workload', 'State', 'Ready', 'Restarts', 'Started'],
          runs.map(({ w, i }) => row({ 'data-instance': i.name, 'data-node-of-instance': i.node }, i.name,
            [h('a', { href: workloadHref(w.namespace, w.name) }, w.name), h('span', { class: 'ns' }, w.namespace)],
            i.phase ? badge(i.phase, phaseTone(i.phase)) : '—', i.ready ? 'Yes' : 'No', String(i.restarts ?? 0), timeAgo(i.startedAt))),
          { hideCaption: true, empty: 'Nothing runs on this machine right now.' })),
      eventsSection('events')),
  ];
}

function nodeLinksSection(n, links) {
  return section('links', 'Connections',
    table('node-links', `Machines ${n.name} is connected to`, ['Other machine', 'Connection', 'Delay'],
      links.map((l) => {
        const other = l.from === n.name ? l.to : l.from;
        return row({ 'data-key': `nl-${other}` }, nodeLink(other), CONNECTION_WORDS[l.connection] || 'Unknown', latencyText(l) || '—');
      }), { hideCaption: true, empty: 'Not connected to any other machine.' }));
}

function nodeFacts(n) {
  const labels = Object.entries(n.labels || {});
  return facts([
    ['State', [readyBadge(n.ready), n.readyReason ? ` ${n.readyReason}` : '']],
    n.readyMessage ? ['Last word', n.readyMessage] : null,
    ['Takes new work', n.unschedulable ? 'No, paused by its owner' : 'Yes'],
    ['Trust', trustBar(n.reputation)],
    ['Safety gate', n.septal ? `${septalWords(n.septal)} (septal gate ${n.septal})` : 'Not reported'],
    ['Role in the mesh', n.nexusRole ? `${roleWords(n.nexusRole)} (${n.nexusRole})` : 'Not reported'],
    ['Processor in use', cpuBar(n)],
    ['Memory in use', memoryBar(n)],
    ['Instances running', String(n.instances ?? 0)],
    ['Balance', n.creditBalance == null ? 'No credit lines' : balanceText(n.creditBalance)],
    ['Reachable from the internet', REACH_WORDS[n.reachability] || n.reachability || 'Not known yet'],
    ['Pricing', n.pricing || 'Not set'],
    ['Entropy', n.entropy == null ? '—' : num(n.entropy, 2)],
    ['Peer ID', h('code', null, n.peerId || '—')],
    ['Identity (DID)', h('code', null, n.did || '—')],
    ['Labels', labels.length ? h('ul', { class: 'chips' }, labels.map(([k, val]) => h('li', { class: 'chip' }, h('code', null, `${k}=${val}`)))) : 'None'],
  ]);
}

/* ---------- A workload's page ---------- */

function findWorkload(v, ns, name) {
  return v.workloads.find((w) => w.namespace === ns && w.name === name);
}

function workloadPage(v, ns, name) {
  const w = findWorkload(v, ns, name);
  if (!w) return notFound('Workload', `${ns}/${name}`);
  const instances = w.instances || [];
  return [
    h('h1', { tabindex: -1, class: 'page-title' }, w.name, ' ', badge(w.phase, phaseTone(w.phase))),
    h('p', { class: 'lead' }, `In ${w.namespace}. ${w.readyReplicas} of ${w.replicas} instances ready.`),
    h('div', { class: 'grid detail' },
      section('about', 'About this workload', facts([
        ['Namespace', w.namespace],
        ['State', badge(w.phase, phaseTone(w.phase))],
        ['Ready', `${w.readyReplicas} of ${w.replicas}`],
        ['Image', h('code', null, w.image || '—')],
        ['Credit spent', w.creditSpent == null ? '—' : credits(w.creditSpent, true)],
      ])),
      section('conditions', 'Conditions', conditionsTable('workload-conditions', w.conditions)),
      section('instances', 'Instances',
        table('instances', `Instances of ${w.name}`, ['Instance', 'Machine', 'State', 'Ready', 'Restarts', 'Address', 'Started', 'Logs'],
          instances.map((i) => row({ 'data-instance': i.name, 'data-node-of-instance': i.node || null }, i.name, nodeLink(i.node),
            [i.phase ? badge(i.phase, phaseTone(i.phase)) : '—', i.message ? h('span', { class: 'note block' }, i.message) : null],
            i.ready ? 'Yes' : 'No', String(i.restarts ?? 0), i.ip || '—', timeAgo(i.startedAt),
            i.index == null ? '—'
              : h('a', { href: logsHref(w.namespace, w.name, i.index), 'aria-label': `Logs of ${i.name}` }, 'Logs'))),
          { hideCaption: true, empty: 'No instances yet.' })),
      eventsSection('events')),
  ];
}

/* ---------- An instance's logs ---------- */

function logsPage(v, route) {
  const instanceName = `${route.name}-${route.index}`;
  const w = v && findWorkload(v, route.ns, route.name);
  const inst = w && (w.instances || []).find((i) => i.index === route.index);
  const where = inst ? [' Runs on ', nodeLink(inst.node), inst.phase ? `, ${inst.phase.toLowerCase()}` : '', '.'] : '';
  const log = state.log;
  return [
    h('h1', { tabindex: -1, class: 'page-title' }, `Logs of ${instanceName}`),
    h('p', { class: 'lead' }, 'Instance of ', h('a', { href: workloadHref(route.ns, route.name) }, route.name), ` in ${route.ns}.`, where),
    h('div', { class: 'log-bar' },
      h('label', { class: 'toggle', for: 'follow' },
        h('input', { type: 'checkbox', id: 'follow', checked: log.follow }), ' Follow new lines'),
      h('span', { class: 'muted', role: 'status', 'data-key': 'log-status' }, log.status)),
    log.error ? h('p', { class: 'notice bad', role: 'alert', 'data-key': 'log-error' }, log.error) : null,
    h('pre', { id: 'log', 'data-keep': true, tabindex: 0, 'aria-label': `Log lines of ${instanceName}` }),
  ];
}

function startLog(route) {
  stopLog();
  const log = { key: state.routeKey, ctrl: new AbortController(), follow: state.log.follow, status: 'Connecting…', error: null, lines: 0 };
  state.log = log;
  const pre = document.getElementById('log');
  if (pre) pre.textContent = '';
  readLog(route, log);
}

function stopLog() {
  if (state.log.ctrl) state.log.ctrl.abort();
  state.log.ctrl = null;
}

async function readLog(route, log) {
  const q = new URLSearchParams({
    namespace: route.ns, workload: route.name, instance: String(route.index),
    follow: String(log.follow), tailLines: '200',
  });
  const current = () => state.log === log && !log.ctrl.signal.aborted;
  try {
    const res = await api(`api/logs?${q}`, { signal: log.ctrl.signal });
    if (res.status === 401) {
      log.status = 'Waiting for the access token…';
      render();
      await needToken(res);
      if (current()) startLog(route);
      return;
    }
    if (!res.ok) {
      log.error = `Could not read this log: ${await errorText(res)}`;
      log.status = '';
      return;
    }
    log.status = log.follow ? 'Following new lines as they come.' : 'Showing the last lines.';
    render();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (current()) appendLog(decoder.decode(value, { stream: true }));
    }
    if (current()) appendLog(decoder.decode());
    log.status = log.follow ? 'The log ended (the instance may have stopped).' : 'Showing the last lines.';
  } catch (e) {
    if (e.name === 'AbortError') return;
    log.error = `Lost the connection to the log: ${e.message}`;
    log.status = '';
  } finally {
    if (state.log === log) render();
  }
}

// Keeps the view at the bottom unless the reader scrolled up, and the text at a readable size.
function appendLog(text) {
  const pre = document.getElementById('log');
  if (!pre || !text) return;
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.append(document.createTextNode(text));
  state.log.lines += (text.match(/\n/g) || []).length;
  if (state.log.lines > LOG_MAX_LINES + 500) {
    pre.textContent = pre.textContent.split('\n').slice(-LOG_MAX_LINES - 1).join('\n');
    state.log.lines = LOG_MAX_LINES;
  }
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function onFollowToggle(checked) {
  state.log.follow = checked;
  if (checked) {
    startLog(state.route);
  } else {
    stopLog();
    state.log.status = 'Paused: new lines are not shown.';
  }
  render();
}

/* ---------- Talking to the server ---------- */

let memoryToken = null;

function currentToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage may be off: the token then lasts until reload */ }
  memoryToken = token || null;
}

// The response remembers which token it was sent with, so a late 401 cannot undo a new token.
async function api(path, opts = {}) {
  const token = currentToken();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(path, { ...opts, headers, cache: 'no-store' });
  res.sentToken = token;
  return res;
}

async function errorText(res) {
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch { /* not JSON */ }
  return `the server answered ${res.status} ${res.statusText}`.trim();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The token comes once in the URL; it must not stay there (history, screenshots, referrers).
function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get('token');
  if (token === null) return;
  storeToken(token);
  url.searchParams.delete('token');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

let tokenWaiters = [];

// Every caller refused with 401 waits here until someone types a token.
function needToken(res) {
  const token = currentToken();
  if (token && token !== res.sentToken) return Promise.resolve();
  const rejected = Boolean(token);
  storeToken(null);
  const auth = document.getElementById('auth');
  document.getElementById('auth-problem').textContent = rejected ? 'That token was not accepted. Please try again.' : '';
  if (auth.hidden) {
    auth.hidden = false;
    render();
    document.getElementById('token-input').focus();
  }
  setLive('token');
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function onTokenSubmit(event) {
  event.preventDefault();
  const input = document.getElementById('token-input');
  const token = input.value.trim();
  if (!token) return;
  storeToken(token);
  input.value = '';
  document.getElementById('auth').hidden = true;
  setLive('connecting');
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((resolve) => resolve());
  document.getElementById('main').focus();
}

function setLive(kind) {
  const el = document.getElementById('live');
  const words = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', token: 'Needs access token' };
  if (el.textContent !== words[kind]) el.textContent = words[kind];
  el.className = `live is-${kind}`;
}

/* ---------- The live stream of views ---------- */

function parseSseFrame(frame) {
  let event = 'message';
  const data = [];
  for (const line of frame.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { event, data: data.join('\n') } : null;
}

async function readSse(body, onFrame, onActivity) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onActivity();
    buf = (buf + decoder.decode(value, { stream: true })).replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = parseSseFrame(buf.slice(0, end));
      buf = buf.slice(end + 2);
      if (frame) onFrame(frame);
    }
  }
}

async function runStream() {
  let delay = BACKOFF_MIN_MS;
  for (;;) {
    const ctrl = new AbortController();
    let silence = null;
    const poke = () => { clearTimeout(silence); silence = setTimeout(() => ctrl.abort(), STREAM_SILENCE_MS); };
    try {
      poke();
      const res = await api('api/stream', { signal: ctrl.signal });
      if (res.status === 401) {
        clearTimeout(silence);
        await needToken(res);
        continue;
      }
      if (!res.ok || !res.body) throw new Error(await errorText(res));
      setLive('live');
      await readSse(res.body, (frame) => {
        if (frame.event !== 'view') return;
        try { onView(JSON.parse(frame.data)); } catch (e) { console.warn('a view frame could not be read', e); }
        delay = BACKOFF_MIN_MS;
      }, poke);
    } catch (e) {
      console.warn('the live stream broke', e);
    }
    clearTimeout(silence);
    ctrl.abort();
    setLive('reconnecting');
    await sleep(delay);
    delay = Math.min(delay * 2, BACKOFF_MAX_MS);
  }
}

// Missing lists become empty ones, so a partial view never breaks the page.
function normalise(v) {
  for (const key of ['nodes', 'links', 'accounts', 'creditLines', 'workloads']) {
    if (!Array.isArray(v[key])) v[key] = [];
  }
  return v;
}

function onView(view) {
  state.view = normalise(view);
  render();
  document.body.setAttribute('data-view-at', view.generatedAt || '');
}

/* ---------- Events of the page's resource ---------- */

function eventsQuery(route) {
  if (route.page === 'node') return new URLSearchParams({ kind: 'Node', name: route.name });
  if (route.page === 'workload') return new URLSearchParams({ kind: 'Workload', namespace: route.ns, name: route.name });
  return null;
}

// Polls while the page stays the same; a new page starts a new loop and this one ends.
async function pollEvents(key, query) {
  state.events = { key, list: null, error: null };
  while (state.events.key === key) {
    if (!document.hidden) {
      try {
        const res = await api(`api/events?${query}`);
        if (res.status === 401) await needToken(res);
        else if (state.events.key !== key) return;
        else if (!res.ok) state.events.error = `Events cannot be shown: ${await errorText(res)}`;
        else {
          const body = await res.json();
          state.events.list = Array.isArray(body.events) ? body.events : [];
          state.events.error = null;
        }
      } catch (e) {
        if (state.events.key === key) state.events.error = `Events cannot be shown: ${e.message}`;
      }
      if (state.events.key === key) render();
    }
    await sleep(EVENTS_EVERY_MS);
  }
}

/* ---------- Routing and rendering ---------- */

function parseRoute(hash) {
  const decode = (p) => { try { return decodeURIComponent(p); } catch { return p; } };
  const parts = hash.replace(/^#\/?/, '').replace(/\/$/, '').split('/').map(decode);
  if (parts.length === 1 && parts[0] === '') return { page: 'overview' };
  if (parts[0] === 'nodes' && parts.length === 2 && parts[1]) return { page: 'node', name: parts[1] };
  if (parts[0] === 'workloads' && parts.length === 3) return { page: 'workload', ns: parts[1], name: parts[2] };
  if (parts[0] === 'workloads' && parts.length === 5 && parts[3] === 'logs' && /^\d+$/.test(parts[4])) {
    return { page: 'logs', ns: parts[1], name: parts[2], index: Number(parts[4]) };
  }
  return { page: 'unknown' };
}

function crumbs(route) {
  if (route.page === 'overview') return null;
  const items = [['Overview', '#/']];
  if (route.page === 'node') items.push([route.name, nodeHref(route.name)]);
  if (route.page === 'workload' || route.page === 'logs') items.push([route.name, workloadHref(route.ns, route.name)]);
  if (route.page === 'logs') items.push([`Logs of ${route.name}-${route.index}`, logsHref(route.ns, route.name, route.index)]);
  return h('ol', null, items.map(([text, href], i) => h('li', { 'data-key': `crumb-${i}` },
    h('a', { href, 'aria-current': i === items.length - 1 ? 'page' : null }, text))));
}

function pageContent(route, v) {
  if (route.page === 'logs') return logsPage(v, route);
  if (route.page === 'unknown') return notFound('Page', null);
  if (!v) return loading();
  if (route.page === 'node') return nodePage(v, route.name);
  if (route.page === 'workload') return workloadPage(v, route.ns, route.name);
  return overviewPage(v);
}

function pageTitle(route) {
  const names = { node: route.name, workload: route.name, logs: `Logs of ${route.name}-${route.index}` };
  return names[route.page] ? `${names[route.page]} · Univrs community` : 'Univrs community';
}

function footer(v) {
  if (!v) return h('p', null, 'Univrs community dashboard');
  const at = new Date(v.generatedAt);
  return h('p', null, `Read from ${v.server || 'the community'}`,
    Number.isNaN(at.getTime()) ? '' : [' · updated ', h('time', { datetime: v.generatedAt }, at.toLocaleTimeString())]);
}

function render() {
  const route = state.route;
  morphChildren(document.getElementById('main'), h('div', null, pageContent(route, state.view)));
  const nav = document.getElementById('crumbs');
  morphChildren(nav, h('div', null, crumbs(route)));
  nav.hidden = !nav.firstChild;
  morphChildren(document.getElementById('foot'), h('div', null, footer(state.view)));
  const title = pageTitle(route);
  if (document.title !== title) document.title = title;
}

function routeKeyOf(route) {
  return [route.page, route.ns, route.name, route.index].filter((x) => x !== undefined).join('|');
}

function onRouteChange(first) {
  const route = parseRoute(location.hash);
  const key = routeKeyOf(route);
  const changed = key !== state.routeKey;
  state.route = route;
  state.routeKey = key;
  if (!changed) return;
  stopLog();
  // A new log page follows again, whatever the last one was left at.
  state.log = { key: '', ctrl: null, follow: true, status: '', error: null, lines: 0 };
  state.events = { key: '', list: null, error: null };
  render();
  if (route.page === 'logs') startLog(route);
  const query = eventsQuery(route);
  if (query) pollEvents(key, query);
  if (!first) {
    window.scrollTo(0, 0);
    // Move keyboard and screen reader users to the new page's heading.
    const heading = document.querySelector('main h1');
    if (heading) heading.focus({ preventScroll: true });
  }
}

function start() {
  takeTokenFromUrl();
  document.getElementById('token-form').addEventListener('submit', onTokenSubmit);
  // Delegated: the morph may keep an old checkbox, so no handler is tied to one element.
  document.addEventListener('change', (e) => {
    if (e.target && e.target.id === 'follow') onFollowToggle(e.target.checked);
  });
  document.addEventListener('click', (e) => {
    const machine = e.target instanceof Element && e.target.closest('#mesh .mesh-node');
    if (machine) location.hash = nodeHref(machine.getAttribute('data-node'));
  });
  window.addEventListener('hashchange', () => onRouteChange(false));
  // Times shown as "2 min ago" age even when nothing changes.
  setInterval(() => { if (state.view && !document.hidden) render(); }, 15000);
  setLive('connecting');
  onRouteChange(true);
  runStream();
}

start();
