// The replay / studio page: PBFT played back message by message.
//
// One script, two sources of data:
//  - replay (medbft replay DIR): every trace row of the run is embedded in the page; the state
//    shown at time t is derived from the rows up to t (scrubbing = recomputing from the rows);
//  - studio (medbft studio): the simulator runs on the server, one step at a time; the page
//    asks it to advance, step or go back (the server replays from the seed), and receives the
//    new trace rows and the replicas' state read from the replica objects.
// Both produce the same "snapshot" (see snapshot()) and the same rendering draws it.
// Plain JavaScript, no framework, no build step, no network access in replay mode.
'use strict';

const DATA = JSON.parse(document.getElementById('data').textContent);
const MODE = DATA.mode;               // "replay" | "studio"
const META = DATA.meta;
const NOTES = DATA.notes;             // what each message kind / event means (sequence.py)
const MS = 1e6;                       // nanoseconds per millisecond

// ---------------------------------------------------------------- colours and names

const ROLE_COLOURS = {hospital: '#2a6fb0', pharmacy: '#2e8b57', regulator: '#b86e00',
                      client: '#6b6b6b'};
// Kinds that look alike in the paper's figure get clearly different colours here
// (PRE-PREPARE blue, NEW-VIEW red).
const KIND_COLOURS = {
  'REQUEST': '#555555', 'PRE-PREPARE': '#1f5fbf', 'PREPARE': '#14a085', 'COMMIT': '#8e44ad',
  'REPLY': '#9a9a9a', 'CHECKPOINT': '#c9a000', 'VIEW-CHANGE': '#e06000', 'NEW-VIEW': '#d0021b',
  'FETCH-STATE': '#5d6d7e', 'STATE-DATA': '#34495e', 'FETCH-BATCH': '#7f8c8d',
  'BATCH-DATA': '#2c3e50'};
const OTHER_KIND = '#b0b0b0';
// Protocol events drawn on the lanes: short label and colour.
const EVENT_GLYPHS = {
  'pre-prepare': ['PP', '#1f5fbf'], 'prepared': ['P', '#14a085'], 'committed': ['C', '#8e44ad'],
  'execute': ['E', '#111111'], 'view-change': ['VC', '#e06000'], 'join-view': ['JV', '#e06000'],
  'new-view': ['NV', '#d0021b'], 'enter-view': ['V', '#d0021b'], 'checkpoint': ['ck', '#c9a000'],
  'stable': ['S', '#c9a000'], 'crash': ['X', '#000000'], 'recover': ['R', '#000000'],
  'state-transfer': ['ST', '#34495e'], 'accept': ['A', '#0b6b3a'], 'retransmit': ['rt', '#777']};
// "phase" steps stop at these events.
const PHASE_EVENTS = new Set(['pre-prepare', 'prepared', 'committed', 'execute', 'view-change',
  'join-view', 'new-view', 'enter-view', 'checkpoint', 'stable', 'state-transfer', 'crash',
  'recover', 'accept', 'byzantine-begin', 'partition-begin', 'heal']);
const PHASE_ORDER = ['pre-prepared', 'prepared', 'committed', 'executed'];

const NODE_IDS = META.nodes.map(n => n.id);
const ROLE = Object.fromEntries(META.nodes.map(n => [n.id, n.role]));
const isReplica = id => id in ROLE;

function colourOfDigest(d) {       // a stable colour per digest, so a fork shows as two colours
  if (!d) return '#eee';
  const h = Math.round(parseInt(d.slice(0, 8), 16) * 137.508) % 360;   // golden-angle spread
  return `hsl(${h},75%,82%)`;
}
const short = d => (d || '').slice(0, 8);
const el = (tag, attrs = {}, text) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
                                                     '"': '&quot;'}[c]));
const fmtMs = t => (t / MS).toFixed(3) + ' ms';

// ---------------------------------------------------------------- the model

// Everything known about the run so far: the rows (in time order), and indexes over them.
const model = {
  rows: [], sends: [], timeline: [], stepTimes: {event: [], message: [], phase: []},
  narration: [], clients: new Set(META.clients || []), maxFlight: 0, end: META.end_ns || 0,
  hasSeq: false,
};

// Add rows (studio: the new ones since the last poll). Arrivals become events of their own,
// placed at their arrival time, so a replica's quorum counters grow when messages arrive.
function ingest(rows) {
  for (const r of rows) {
    r.i = model.rows.length;
    model.rows.push(r);
    if (r.event === 'send') {
      model.sends.push(r);
      if (r.seq !== undefined) model.hasSeq = true;   // older traces: sends carry no seq
      if (!isReplica(r.node)) model.clients.add(r.node);
      for (const a of (r.arrive || [])) {
        model.maxFlight = Math.max(model.maxFlight, a - r.t);
        // a copy that reached a crashed party (lost, reason "crashed") was not received
        if (r.lost === true) continue;
        model.timeline.push({t: a, event: 'arrive', node: r.to, from: r.node, kind: r.kind,
                             view: r.view, seq: r.seq, digest: r.digest, i: r.i, arrival: 1});
      }
    } else if (r.event === 'accept' && !isReplica(r.node)) {
      model.clients.add(r.node);
    }
    model.timeline.push(r);
    model.end = Math.max(model.end, r.t);
  }
  // arrivals before the events they cause at the same instant; then in recorded order
  model.timeline.sort((a, b) => a.t - b.t || (b.arrival || 0) - (a.arrival || 0) || a.i - b.i);
  const times = kind => [...new Set(model.timeline.filter(kind).map(r => r.t))];
  model.stepTimes.event = times(() => true);
  model.stepTimes.message = [...new Set(model.sends.map(r => r.t))];
  model.stepTimes.phase = times(r => PHASE_EVENTS.has(r.event));
  derive.reset();
}

function resetModel() {
  Object.assign(model, {rows: [], sends: [], timeline: [], narration: [], maxFlight: 0,
                        end: META.end_ns || 0, hasSeq: false});
  model.clients = new Set(META.clients || []);
}

// First index in sorted `arr` whose key is > t (binary search).
function upper(arr, t, key = x => x) {
  let lo = 0, hi = arr.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (key(arr[mid]) <= t) lo = mid + 1; else hi = mid; }
  return lo;
}

// ---------------------------------------------------------------- state derived from the trace

// The replicas' state at time t, recomputed from the timeline. Moving forward continues from
// the last position; moving backwards starts again from time 0 (cheap: a few 10k rows).
const derive = {
  pos: 0, at: -1, s: null,
  reset() { this.pos = 0; this.at = -1; this.s = null; },
  fresh() {
    const nodes = {};
    for (const id of NODE_IDS) {
      nodes[id] = {view: 0, active: true, crashed: false, byz: null, lastExec: 0, stable: 0,
                   checkpoint: 0, slots: new Map(), votes: new Map(), cause: null};
    }
    return {nodes, execs: new Map(), partitions: [], links: [], accepted: 0};
  },
  to(t) {
    if (this.s === null || t < this.at) { this.s = this.fresh(); this.pos = 0; }
    const tl = model.timeline;
    while (this.pos < tl.length && tl[this.pos].t <= t) apply(this.s, tl[this.pos++]);
    this.at = t;
    return this.s;
  },
};

function slotOf(n, seq) {
  let s = n.slots.get(seq);
  if (!s) { s = {seq, view: -1, digest: '', phase: '', reqs: []}; n.slots.set(seq, s); }
  return s;
}

function setPhase(n, r, phase) {
  const s = slotOf(n, r.seq);
  if (r.view !== undefined) s.view = r.view;
  if (r.digest) s.digest = r.digest;
  if (r.requests) s.reqs = r.requests;
  if (PHASE_ORDER.indexOf(phase) >= PHASE_ORDER.indexOf(s.phase)) s.phase = phase;
}

function apply(s, r) {
  const n = s.nodes[r.node];
  switch (r.event) {
    case 'arrive':
      if (n && r.seq !== undefined && (r.kind === 'PREPARE' || r.kind === 'COMMIT')) {
        if (!n.votes.has(r.seq)) n.votes.set(r.seq, []);
        n.votes.get(r.seq).push(r);
      }
      return;
    case 'pre-prepare': if (n) { setPhase(n, r, 'pre-prepared'); n.view = Math.max(n.view, r.view); } return;
    case 'prepared': if (n) setPhase(n, r, 'prepared'); return;
    case 'committed': if (n) setPhase(n, r, 'committed'); return;
    case 'execute':
      if (!n) return;
      setPhase(n, r, 'executed');
      n.lastExec = Math.max(n.lastExec, r.seq);
      if (!s.execs.has(r.seq)) s.execs.set(r.seq, new Map());
      s.execs.get(r.seq).set(r.node, r.digest);
      return;
    case 'view-change': case 'join-view':
      if (n) { n.view = r.view; n.active = false; n.cause = r.cause || null; } return;
    case 'enter-view': if (n) { n.view = r.view; n.active = true; } return;
    case 'recovering': if (n) { n.view = r.view ?? n.view; n.lastExec = r.last_executed ?? n.lastExec; } return;
    case 'state-transfer':
      if (n) { n.lastExec = Math.max(n.lastExec, r.seq); n.stable = Math.max(n.stable, r.seq); } return;
    case 'checkpoint': if (n) n.checkpoint = r.seq; return;
    case 'stable':
      if (!n) return;
      n.stable = Math.max(n.stable, r.seq);
      for (const k of [...n.slots.keys()]) if (k <= n.stable) n.slots.delete(k);
      for (const k of [...n.votes.keys()]) if (k <= n.stable) n.votes.delete(k);
      return;
    case 'crash': if (n) n.crashed = true; return;
    case 'recover': if (n) n.crashed = false; return;
    case 'byzantine-begin': if (n) n.byz = (r.label || '').replace(r.node + ' ', ''); return;
    case 'byzantine-end': if (n) n.byz = null; return;
    case 'partition-begin': s.partitions.push(r.node); return;
    case 'partition-end': s.partitions = s.partitions.filter(p => p !== r.node); return;
    case 'link-begin': s.links.push(r.node); return;
    case 'link-end': s.links = s.links.filter(p => p !== r.node); return;
    case 'heal': s.partitions = []; s.links = []; return;
    case 'accept': s.accepted += 1; return;
    default: return;
  }
}

// Nodes that were ever Byzantine are not honest (as sim/checker.py counts them).
function honestNodes() {
  if (MODE === 'studio' && studio.honest) return new Set(studio.honest);
  const byz = new Set(META.byzantine || []);
  for (const r of model.rows) if (r.event === 'byzantine-begin') byz.add(r.node);
  return new Set(NODE_IDS.filter(id => !byz.has(id)));
}

// The snapshot the page draws: per replica its position and its last log slots, with the
// quorum counters, and the forks so far. In studio mode the server sends the same shape,
// read from the replica objects.
function snapshot(t) {
  const s = derive.to(t);
  const honest = honestNodes();
  const W = META.watermark_window;
  const nodes = {};
  for (const id of NODE_IDS) {
    const n = s.nodes[id];
    const primaryOf = v => NODE_IDS[((v % META.n) + META.n) % META.n];
    const slots = [...n.slots.values()].sort((a, b) => b.seq - a.seq).slice(0, 6).map(sl => {
      const votes = (n.votes.get(sl.seq) || []).filter(v => v.view === sl.view &&
                                                        (!sl.digest || !v.digest || v.digest === sl.digest));
      const from = kind => new Set(votes.filter(v => v.kind === kind).map(v => v.from));
      const prep = from('PREPARE'), comm = from('COMMIT');
      const reached = PHASE_ORDER.indexOf(sl.phase);
      // a backup's own PREPARE and everyone's own COMMIT count too (they send none to self)
      if (reached >= 0 && primaryOf(sl.view) !== id) prep.add(id);
      if (reached >= 1) comm.add(id);
      return {seq: sl.seq, view: sl.view, digest: sl.digest, phase: sl.phase,
              prepares: prep.size, commits: comm.size, counted: model.hasSeq};
    });
    nodes[id] = {view: n.view, active: n.active, crashed: n.crashed, byz: n.byz,
                 lastExec: n.lastExec, stable: n.stable, low: n.stable,
                 high: W ? n.stable + W : null, slots, cause: n.cause};
  }
  return {t, nodes, forks: forks(s.execs, honest), partitions: s.partitions, links: s.links,
          derived: true};
}

// Sequence numbers at which honest replicas executed different batches.
function forks(execs, honest) {
  const out = [];
  for (const [seq, byNode] of execs) {
    const digests = {};
    for (const [node, d] of byNode) if (honest.has(node)) (digests[d] = digests[d] || []).push(node);
    if (Object.keys(digests).length > 1) out.push({seq, digests});
  }
  return out.sort((a, b) => a.seq - b.seq);
}

// The view most live replicas are in, and its primary.
function currentView(snap) {
  const count = {};
  for (const id of NODE_IDS) {
    const n = snap.nodes[id];
    if (!n.crashed) count[n.view] = (count[n.view] || 0) + 1;
  }
  let best = 0, most = -1;
  for (const [v, c] of Object.entries(count)) if (c > most || (c === most && +v > best)) { best = +v; most = c; }
  return best;
}

// ---------------------------------------------------------------- drawing the lanes

const svg = document.getElementById('lanes');
const LANE_H = 46, TOP = 26, LEFT = 210, RIGHT = 12;

// Stretches a party spent crashed or Byzantine, from the rows (for shading the lanes).
function stretches(begin, end, t) {
  const out = [], open = {};
  for (const r of model.rows) {
    if (r.t > t) break;
    if (r.event === begin) open[r.node] = open[r.node] ?? r.t;
    else if (r.event === end && r.node in open) { out.push([r.node, open[r.node], r.t]); delete open[r.node]; }
  }
  for (const [node, since] of Object.entries(open)) out.push([node, since, t]);
  return out;
}

function drawLanes(t, snap) {
  const width = Math.max(600, svg.clientWidth || 900);
  const parties = [...[...model.clients].sort(), ...NODE_IDS];
  const faults = networkAt(t);                      // written under the lanes
  const height = TOP + parties.length * LANE_H + 10 + (faults.length ? 16 : 0);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('height', height);
  svg.classList.toggle('studio', MODE === 'studio');
  svg.replaceChildren();
  const W = zoomNs();
  const plotW = width - LEFT - RIGHT;
  const t0 = t - 0.9 * W;                              // "now" sits at 90% of the width
  const x = tt => LEFT + (tt - t0) / W * plotW;
  const y = Object.fromEntries(parties.map((p, i) => [p, TOP + i * LANE_H + LANE_H / 2]));
  const view = currentView(snap);
  const primary = NODE_IDS[view % META.n];
  // time axis: ticks, and the "now" line
  const step = niceStep(W / 6);
  for (let tt = Math.max(0, Math.ceil(t0 / step) * step); tt <= t0 + W; tt += step) {
    svg.append(el('line', {x1: x(tt), x2: x(tt), y1: TOP - 6, y2: height - 6, stroke: '#eee'}));
    svg.append(el('text', {x: x(tt) + 2, y: 12, fill: '#999'}, (tt / MS).toFixed(step < MS ? 3 : 0) + ' ms'));
  }
  svg.append(el('rect', {x: x(t), y: TOP - 8, width: LEFT + plotW - x(t), height: height - TOP,
                         fill: '#f4f4f4'}));
  if (faults.length) {
    svg.append(el('text', {x: 6, y: height - 4, fill: '#a3211a', 'font-weight': 600,
                           class: 'net-faults'}, 'network: ' + faults.join(' · ')));
  }
  svg.append(el('line', {x1: x(t), x2: x(t), y1: TOP - 8, y2: height - 4, stroke: '#d4a000',
                         'stroke-width': 2}));
  // lanes: crashed stretches grey and dashed, Byzantine ones purple
  for (const p of parties) {
    const colour = ROLE_COLOURS[isReplica(p) ? ROLE[p] : 'client'] || '#444';
    svg.append(el('line', {x1: LEFT, x2: LEFT + plotW, y1: y[p], y2: y[p], stroke: colour,
                           'stroke-width': 2, opacity: .55}));
    const name = el('text', {x: 6, y: y[p] - 4, fill: colour, 'font-weight': 600,
                             class: 'lane-name ' + (isReplica(p) ? 'replica' : 'client'),
                             'data-node': p}, p);
    svg.append(name);
    const tags = [];
    if (isReplica(p)) {
      const n = snap.nodes[p];
      if (p === primary) tags.push(`primary v${view}`);
      if (n.crashed) tags.push('crashed');
      if (n.byz) tags.push('byzantine: ' + n.byz);
      if (!n.active && !n.crashed) tags.push(`view change to v${n.view}`);
      if (!tags.length) tags.push(ROLE[p]);   // the colour says the role when space is short
    } else tags.push('client');
    svg.append(el('text', {x: 6, y: y[p] + 11, fill: '#666', 'font-size': 10,
                           class: 'lane-tags', 'data-node': p}, tags.join(' · ')));
  }
  for (const [node, a, b] of stretches('crash', 'recover', t)) {
    if (!(node in y)) continue;
    svg.append(el('rect', {x: Math.max(LEFT, x(a)), y: y[node] - 9, height: 18,
                           width: Math.max(0, Math.min(x(b), LEFT + plotW) - Math.max(LEFT, x(a))),
                           fill: '#000', opacity: .12, class: 'down', 'data-node': node}));
  }
  for (const [node, a, b] of stretches('byzantine-begin', 'byzantine-end', t)) {
    if (!(node in y)) continue;
    svg.append(el('rect', {x: Math.max(LEFT, x(a)), y: y[node] - 9, height: 18,
                           width: Math.max(0, Math.min(x(b), LEFT + plotW) - Math.max(LEFT, x(a))),
                           fill: '#8e1fa6', opacity: .13, class: 'byz', 'data-node': node}));
  }
  // messages sent in the window (and those still in flight from before it), clipped to the
  // plot area so lines that start before the window do not cross the lane names
  const defs = el('defs');
  const clip = el('clipPath', {id: 'plot'});
  clip.append(el('rect', {x: LEFT, y: 0, width: plotW, height}));
  defs.append(clip);
  svg.append(defs);
  const plot = el('g', {'clip-path': 'url(#plot)'});
  svg.append(plot);
  const sends = model.sends;
  let i = upper(sends, t0 - model.maxFlight, r => r.t);
  let drawn = 0;
  const pairs = {};
  for (; i < sends.length && sends[i].t <= t && drawn < 4000; i++) {
    const m = sends[i];
    if (!(m.node in y) || !(m.to in y)) continue;
    const colour = KIND_COLOURS[m.kind] || OTHER_KIND;
    const arrive = (m.arrive && m.arrive.length) ? m.arrive[0] : null;
    const x1 = x(m.t), y1 = y[m.node];
    if (arrive !== null && m.lost === true && arrive <= t) {
      // reached a crashed party (newer traces: lost with reason "crashed"): dashed, a cross
      if (x(arrive) < LEFT) continue;
      plot.append(el('line', {x1, y1, x2: x(arrive), y2: y[m.to], stroke: colour,
                              'stroke-width': 1.4, 'stroke-dasharray': '3 3', class: 'msg lost'}));
      plot.append(el('text', {x: x(arrive) - 4, y: y[m.to] + 4, fill: '#d0021b',
                              'font-size': 12, 'font-weight': 700}, '×'));
      drawn++;
      continue;
    }
    if (arrive === null) {                          // lost: dashed, stops half way, a cross
      if (x1 < LEFT) continue;
      const xm = x1 + 18, ym = y1 + (y[m.to] - y1) * 0.35;
      plot.append(el('line', {x1, y1, x2: xm, y2: ym, stroke: colour, 'stroke-width': 1.4,
                             'stroke-dasharray': '3 3', class: 'msg lost'}));
      plot.append(el('text', {x: xm - 4, y: ym + 4, fill: '#d0021b', 'font-size': 12,
                             'font-weight': 700}, '×'));
      drawn++;
      continue;
    }
    if (x(arrive) < LEFT) continue;
    // messages of different kinds between the same two parties at one instant (NEW-VIEW,
    // then PRE-PREPAREs) would hide each other: each further one is drawn 4 px lower
    const kinds = pairs[m.t + '|' + m.node + '|' + m.to] ??= [];
    if (!kinds.includes(m.kind)) kinds.push(m.kind);
    const lift = Math.min(kinds.indexOf(m.kind), 3) * 4;
    const frac = arrive > t ? (t - m.t) / Math.max(1, arrive - m.t) : 1;
    const x2 = x1 + (x(arrive) - x1) * frac, y2 = y1 + lift + (y[m.to] - y1) * frac;
    const line = el('line', {x1, y1: y1 + lift, x2, y2, stroke: colour, 'stroke-width': 1.6,
                             class: 'msg' + (arrive > t ? ' flying' : '')});
    line.append(el('title', {}, `${m.kind} ${m.node} → ${m.to}` +
                  (m.seq !== undefined ? ` seq ${m.seq} view ${m.view}` : '') +
                  (m.digest ? ` digest ${short(m.digest)}` : '') +
                  (m.lost === true ? ` (not received: ${m.reason || 'lost'})` : '')));
    plot.append(line);
    if (arrive > t) plot.append(el('circle', {cx: x2, cy: y2, r: 3.5, fill: colour}));
    else plot.append(el('circle', {cx: x2, cy: y2, r: 2, fill: colour}));
    drawn++;
  }
  // protocol events as small labelled marks on their lane
  const forked = new Set(snap.forks.map(f => f.seq));
  const rows = model.rows;
  const stacked = {};   // events of one party at one instant side by side (NV, V, PP)
  for (let j = upper(rows, t0, r => r.t); j < rows.length && rows[j].t <= t; j++) {
    const r = rows[j];
    const g = EVENT_GLYPHS[r.event];
    if (!g || !(r.node in y) || x(r.t) < LEFT) continue;
    const key = r.t + '|' + r.node + '|' + r.event;
    const spot = r.t + '|' + r.node;
    if (key in stacked) continue;            // one mark per kind (prepared at seq 33..61)
    stacked[key] = true;
    const k = stacked[spot] = (stacked[spot] ?? -1) + 1;
    const cx = x(r.t) + k * 17;
    const bad = r.event === 'execute' && forked.has(r.seq);
    const mark = el('g', {class: 'ev ev-' + r.event});
    mark.append(el('rect', {x: cx - 8, y: y[r.node] - 22, width: 16, height: 11, rx: 2,
                            fill: bad ? '#ffdad6' : '#fff', stroke: bad ? '#d0021b' : g[1]}));
    mark.append(el('text', {x: cx, y: y[r.node] - 13.5, 'text-anchor': 'middle',
                            'font-size': 8, fill: g[1]}, g[0]));
    mark.append(el('title', {}, `${fmtMs(r.t)} ${r.node}: ${r.event}` +
                   (r.seq !== undefined ? ` seq ${r.seq}` : '') +
                   (r.view !== undefined ? ` view ${r.view}` : '') +
                   (r.digest ? ` digest ${short(r.digest)}` : '') + (r.cause ? ` (${r.cause})` : '')));
    svg.append(mark);
  }
}

// Network faults in force at time t (partitions, isolations, degraded links), from the rows.
function networkAt(t) {
  const open = new Map();
  for (const r of model.rows) {
    if (r.t > t) break;
    const m = /^(partition|isolate|link)-(begin|end)$/.exec(r.event);
    if (m && m[2] === 'begin') open.set(m[1] + ' ' + r.node, r.label || r.node);
    else if (m) open.delete(m[1] + ' ' + r.node);
    else if (r.event === 'heal') open.clear();
  }
  return [...open.keys()];
}

function niceStep(x) {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  return [1, 2, 5, 10].map(k => k * p).find(s => s >= x);
}

function drawLegend() {
  const box = document.getElementById('legend');
  const kinds = Object.entries(KIND_COLOURS).map(([k, c]) =>
    `<span><i style="background:${c}"></i>${k}</span>`);
  const roles = Object.entries(ROLE_COLOURS).map(([k, c]) =>
    `<span style="color:${c};font-weight:600">${k}</span>`);
  box.innerHTML = kinds.join('') + '<span>· dashed + ×: lost</span>' + roles.join('') +
    '<span>PP pre-prepare · P prepared · C committed · E executed · VC view change · NV new view · V entered view · A client accepted</span>';
}

// ---------------------------------------------------------------- the side panels

function drawState(snap) {
  const cards = document.getElementById('cards');
  const view = currentView(snap);
  const forkedSeqs = new Set(snap.forks.map(f => f.seq));
  const q = META.q;
  document.getElementById('state-note').textContent = snap.derived
    ? `(derived from the trace at ${fmtMs(snap.t)}; n = ${META.n}, f = ${META.f}, quorum ${q})`
    : `(read from the replicas at ${fmtMs(snap.t)}; n = ${META.n}, f = ${META.f}, quorum ${q})`;
  cards.replaceChildren();
  const differ = ledgerDifferences(snap);
  for (const id of NODE_IDS) {
    const n = snap.nodes[id];
    const card = document.createElement('div');
    card.className = 'card' + (n.crashed ? ' crashed' : '') + (n.byz ? ' byzantine' : '');
    card.dataset.node = id;
    card.style.borderTopColor = ROLE_COLOURS[ROLE[id]] || '#999';
    const tags = [];
    if (NODE_IDS[view % META.n] === id) tags.push('<span class="tag primary">primary</span>');
    if (n.crashed) tags.push('<span class="tag crashed">crashed</span>');
    if (n.byz) tags.push(`<span class="tag byzantine">byzantine: ${esc(n.byz)}</span>`);
    if (!n.active && !n.crashed) tags.push(`<span class="tag inactive">view change${n.cause ? ' (' + esc(n.cause) + ')' : ''}</span>`);
    const rows = n.slots.map(sl => {
      const pFull = sl.prepares >= q - 1, cFull = sl.commits >= q;
      const counters = sl.counted === false && snap.derived
        ? '<td colspan="2" class="muted">–</td>'
        : `<td class="${pFull ? 'full' : ''}" title="matching PREPAREs held: ${sl.prepares}; prepared needs 2f = ${q - 1}">${sl.prepares} / ${q - 1}${pFull ? ' ✓' : ''}</td>` +
          `<td class="${cFull ? 'full' : ''}" title="matching COMMITs held: ${sl.commits}; committed needs 2f+1 = ${q}">${sl.commits} / ${q}${cFull ? ' ✓' : ''}</td>`;
      return `<tr class="slot" data-seq="${sl.seq}"><td>${sl.seq}</td><td>${sl.view}</td>` +
        `<td><span class="digest${forkedSeqs.has(sl.seq) ? ' forked' : ''}" style="background:${colourOfDigest(sl.digest)}">${short(sl.digest) || '–'}</span></td>` +
        `<td class="ph-${sl.phase}">${sl.phase || '–'}</td>${counters}</tr>`;
    }).join('');
    card.innerHTML = `<h3 style="color:${ROLE_COLOURS[ROLE[id]] || '#222'}">${esc(id)} ${tags.join(' ')}</h3>` +
      `<div class="pos">view <b class="view">${n.view}</b>${n.active ? '' : ' (not active)'} · ` +
      `last executed <b class="last-exec">${n.lastExec}</b> · stable checkpoint <b>${n.stable}</b> · ` +
      `watermarks ${n.low}–${n.high ?? '?'}</div>` +
      (rows ? `<table><tr><th>seq</th><th>view</th><th>digest</th><th>phase</th><th title="matching PREPAREs / the 2f needed">PREPAREs / 2f</th><th title="matching COMMITs / the 2f+1 needed">COMMITs / 2f+1</th></tr>${rows}</table>`
            : '<div class="muted">no slots in the log</div>') +
      (n.ledger ? `<div class="pos muted">${esc(n.ledger)}</div>` : '') +
      (n.book ? drawBook(n.book, differ) : '');
    cards.append(card);
  }
  drawPatientPick(snap);
}

// The studio's ledger panel in a card: the lots' statuses and one patient's consents, as
// this replica's ledger records them (ids and pseudonyms only). A status that differs
// between replicas (one lagging, or corrupted) is outlined red.
const slug = s => String(s).replace(/[^a-z]+/g, '-');
function drawBook(b, differ) {
  const lots = b.lots.map(l => `<tr class="lot" data-lot="${esc(l.lot)}"><td>${esc(l.lot)}</td>` +
    `<td class="st-${slug(l.status)}${differ.has('lot ' + l.lot) ? ' differs' : ''}"` +
    `${l.recall ? ` title="${esc(l.recall)}"` : ''}>${esc(l.status)}${l.recall ? ' (' + esc(l.recall) + ')' : ''}</td></tr>`).join('');
  const consents = b.consents.map(c => `<tr class="consent" data-consent="${esc(c.consent_id)}">` +
    `<td>${esc(c.consent_id)}</td><td>${esc(c.grantee)}</td>` +
    `<td title="${esc(c.actions.join(', '))}">${esc(c.purposes.join(', '))}</td>` +
    `<td class="st-${slug(c.status)}${differ.has('consent ' + c.consent_id) ? ' differs' : ''}">${esc(c.status)}` +
    `${c.revoked_height !== null ? ' at block ' + c.revoked_height : ''}</td></tr>`).join('');
  const more = k => k ? `<div class="muted">+${k} more</div>` : '';
  return `<div class="ledger"><h4>Lots</h4>` +
    (lots ? `<div class="scroll"><table class="lots"><tr><th>lot</th><th>status</th></tr>${lots}</table></div>`
          : '<div class="muted">no lots yet</div>') + more(b.lots_more) +
    `<h4>Consents of ${esc(b.patient || '–')}</h4>` +
    (consents ? `<div class="scroll"><table class="consents"><tr><th>consent</th><th>grantee</th><th>purpose</th><th>status</th></tr>${consents}</table></div>`
              : '<div class="muted">none</div>') + more(b.consents_more) + '</div>';
}

// Lots and consents whose status is not the same on every replica that lists them.
function ledgerDifferences(snap) {
  const seen = new Map();
  const note = (key, status) => {
    if (!seen.has(key)) seen.set(key, new Set());
    seen.get(key).add(status);
  };
  for (const id of NODE_IDS) {
    const b = (snap.nodes[id] || {}).book;
    if (!b) continue;
    for (const l of b.lots) note('lot ' + l.lot, l.status);
    for (const c of b.consents) note('consent ' + c.consent_id, c.status);
  }
  return new Set([...seen].filter(([, statuses]) => statuses.size > 1).map(([key]) => key));
}

// The patient chooser (studio, ledger runs): the pseudonyms with a consent; the server shows
// the one chosen, or the latest one changed while none is.
function drawPatientPick(snap) {
  const pick = document.getElementById('ledger-pick');
  pick.hidden = !snap.patients;
  if (!snap.patients) return;
  const select = document.getElementById('patient');
  const want = ['', ...snap.patients].join('\n');
  if (select.dataset.options !== want) {
    select.replaceChildren(new Option('the latest changed', ''),
                           ...snap.patients.map(p => new Option(p, p)));
    select.dataset.options = want;
  }
  select.value = snap.patients.includes(studio.patient) ? studio.patient : '';
}

function drawForks(snap) {
  const box = document.getElementById('forks');
  const banner = document.getElementById('banner');
  if (!snap.forks.length) { box.innerHTML = ''; banner.textContent = ''; return; }
  const first = snap.forks[0];
  banner.textContent = `FORK: honest replicas executed different batches at seq ${first.seq}` +
    (snap.forks.length > 1 ? ` (and ${snap.forks.length - 1} more)` : '');
  const rows = snap.forks.slice(0, 8).map(f => `<tr><td>seq ${f.seq}</td><td>` +
    Object.entries(f.digests).map(([d, ns]) =>
      `<span class="digest" style="background:${colourOfDigest(d)}">${short(d)}</span> ${ns.map(esc).join(', ')}`).join('<br>') +
    '</td></tr>').join('');
  box.innerHTML = `<h2>Fork: agreement violated</h2><p>Two honest replicas executed different ` +
    `batches at the same sequence number. With more than f Byzantine replicas PBFT's quorums ` +
    `no longer intersect in an honest replica.</p><table>${rows}</table>` +
    (snap.forks.length > 8 ? `<p class="muted">${snap.forks.length - 8} more</p>` : '');
}

function drawNarration(t) {
  const list = document.getElementById('steps');
  const nar = model.narration;
  const k = upper(nar, t, e => e[0]) - 1;          // the last step at or before t
  const from = Math.max(0, k - 10), to = Math.min(nar.length, k + 4);
  list.replaceChildren();
  for (let j = from; j < to; j++) {
    const li = document.createElement('li');
    li.textContent = `${(nar[j][0] / MS).toFixed(3).padStart(9)} ms  ${nar[j][1]}`;
    li.className = j === k ? 'now' : (j > k ? 'future' : '');
    li.dataset.t = nar[j][0];
    li.onclick = () => seek(nar[j][0]);
    list.append(li);
  }
  const cur = list.querySelector('.now');
  if (cur) cur.scrollIntoView({block: 'nearest'});
  const what = k >= 0 ? nar[k][2] : null;
  document.getElementById('explain').textContent = what && NOTES[what]
    ? `${nar[k][1].split(':')[0]} — ${what}: ${NOTES[what]}.`
    : (k < 0 ? 'Press play, or step to the next event.' : '');
}

// ---------------------------------------------------------------- time and controls

let now = 0, playing = false, lastFrame = 0;
const zoomNs = () => Number(document.getElementById('zoom').value) * MS;
const speedNsPerMs = () => Number(document.getElementById('speed').value) * MS / 1000;
const slider = document.getElementById('slider');

function render() {
  const snap = MODE === 'studio' && studio.state ? studio.state : snapshot(now);
  document.getElementById('clock').textContent = `t = ${fmtMs(now)}`;
  slider.max = Math.max(1, Math.round(endNs() / 1000));    // microseconds
  slider.value = Math.round(now / 1000);
  drawLanes(now, snap);
  drawState(snap);
  drawForks(snap);
  drawNarration(now);
  drawVerdict(snap);
}

function drawVerdict(snap) {
  const badge = document.getElementById('verdict');
  const ok = snap.forks.length === 0 && (MODE === 'studio' ? studio.safety !== false
                                                               : META.safety_ok !== false || now < model.end);
  badge.className = 'badge ' + (ok ? 'ok' : 'bad');
  badge.textContent = snap.forks.length ? 'safety violated (fork)' : (ok ? 'safety holds so far' : 'safety violated');
}

const endNs = () => MODE === 'studio' ? studio.end : model.end;

function seek(t) {
  t = Math.max(0, Math.min(t, endNs()));
  if (MODE === 'studio') return studio.seek(t);
  now = t; render();
}

function stepTo(what) {
  if (MODE === 'studio') return studio.step(what);
  const times = model.stepTimes[what];
  const k = upper(times, now);
  if (k < times.length) seek(times[k]);
}

function frame(ts) {
  if (!playing) return;
  const dt = lastFrame ? Math.min(ts - lastFrame, 100) : 0;
  lastFrame = ts;
  if (MODE === 'studio') {
    studio.play(dt * speedNsPerMs()).then(() => requestAnimationFrame(frame));
    return;
  }
  now = Math.min(model.end, now + dt * speedNsPerMs());
  render();
  if (now >= model.end) setPlaying(false); else requestAnimationFrame(frame);
}

function setPlaying(on) {
  playing = on;
  lastFrame = 0;
  document.getElementById('play').innerHTML = on ? '&#x23F8; pause' : '&#x25B6; play';
  if (on) requestAnimationFrame(frame);
}

document.getElementById('play').onclick = () => setPlaying(!playing);
document.getElementById('reset').onclick = () => { setPlaying(false); seek(0); };
document.getElementById('step-event').onclick = () => stepTo('event');
document.getElementById('step-message').onclick = () => stepTo('message');
document.getElementById('step-phase').onclick = () => stepTo('phase');
document.getElementById('zoom').onchange = render;
slider.oninput = () => { if (MODE !== 'studio') seek(Number(slider.value) * 1000); };
slider.onchange = () => { if (MODE === 'studio') seek(Number(slider.value) * 1000); };
addEventListener('keydown', e => {
  if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
  if (e.key === ' ') { e.preventDefault(); setPlaying(!playing); }
  else if (e.key === 'e') stepTo('event');
  else if (e.key === 'm') stepTo('message');
  else if (e.key === 'p') stepTo('phase');
});
addEventListener('resize', () => render());

// ---------------------------------------------------------------- studio: the live simulator

// The server owns the run; `gen` changes whenever it rebuilt it (an action, or going back in
// time), and then the page drops its rows and takes the new ones from the start.
const studio = {
  gen: -1, end: 0, state: null, honest: null, safety: null, pending: 0, actions: [],
  patient: '',   // the pseudonym whose consents the ledger panel shows ('' = the latest changed)
  async call(path, body) {
    const res = await fetch(path, body === undefined ? {} : {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  },
  since() { return this.gen < 0 ? 0 : model.rows.length; },
  take(d) {
    if (d.gen !== this.gen) { resetModel(); this.gen = d.gen; }
    if (d.rows.length) ingest(d.rows);
    model.narration.push(...d.narration);
    this.end = d.end_ns; this.state = d.state; this.honest = d.honest; this.safety = d.safety_ok;
    model.end = Math.max(model.end, d.now_ns);
    now = d.now_ns;
    this.actions = d.actions;
    drawActions(d);
    render();
    if (d.done && playing) setPlaying(false);
  },
  // One call at a time, in order: a click waits for the call before it. Play frames are
  // dropped instead while a call is under way (the next frame asks for the time passed).
  queue: Promise.resolve(),
  post(path, body, droppable = false) {
    if (droppable && this.pending) return Promise.resolve();
    this.pending += 1;
    const run = async () => {
      try {
        this.take(await this.call(path, {...body, gen: this.gen, since: this.since(),
                                         patient: this.patient || null}));
      }
      catch (e) { document.getElementById('saved').textContent = 'error: ' + e.message; }
    };
    this.queue = this.queue.then(run).finally(() => { this.pending -= 1; });
    return this.queue;
  },
  refresh() { return this.post('/api/poll', {}); },
  play(dtNs) {
    return this.post('/api/advance', {to_ns: Math.round(now + Math.max(dtNs, 1))}, true);
  },
  seek(t) { return this.post('/api/seek', {t_ns: Math.round(t)}); },
  step(what) { return this.post('/api/step', {what}); },
  act(action) { closeMenu(); return this.post('/api/action', {action}); },
};

function drawActions(d) {
  const ol = document.getElementById('actions');
  ol.replaceChildren(...d.actions.map(a => {
    const li = document.createElement('li'); li.textContent = a; return li;
  }));
  document.getElementById('undo').disabled = !d.actions.length;
}

const menu = document.getElementById('menu');
function closeMenu() { menu.hidden = true; }

// Clicking a replica's name opens its what-if menu.
function openMenu(node, ev) {
  const n = (studio.state || {nodes: {}}).nodes[node] || {};
  const others = NODE_IDS.filter(id => id !== node);
  const behaviours = DATA.behaviors || [];
  menu.innerHTML = `<b>${esc(node)}</b>` +
    (n.crashed ? `<button data-act="recover">recover ${esc(node)}</button>`
               : `<button data-act="crash">crash ${esc(node)}</button>`) +
    `<label>Byzantine: <select id="m-byz">${behaviours.map(b => `<option>${esc(b)}</option>`).join('')}</select></label>` +
    `<button data-act="byzantine">make it Byzantine</button>` +
    `<label>slow its link to <select id="m-peer">${others.map(o => `<option>${esc(o)}</option>`).join('')}</select></label>` +
    `<label>latency <select id="m-lat"><option>100ms</option><option selected>300ms</option><option>1s</option></select></label>` +
    `<button data-act="link">slow the link</button><button data-act="close">close</button>`;
  menu.style.left = ev.pageX + 'px'; menu.style.top = ev.pageY + 'px';
  menu.hidden = false;
  menu.onclick = e => {
    const act = e.target.dataset && e.target.dataset.act;
    if (!act) return;
    if (act === 'close') return closeMenu();
    if (act === 'crash' || act === 'recover') return studio.act({kind: act, node});
    if (act === 'byzantine') return studio.act({kind: 'byzantine', node, behavior: menu.querySelector('#m-byz').value});
    if (act === 'link') return studio.act({kind: 'link', between: [node, menu.querySelector('#m-peer').value],
                                           latency: menu.querySelector('#m-lat').value});
  };
}

// Partition: tick the replicas of one side, then apply; the others form the other side.
function openPartition(ev) {
  menu.innerHTML = '<b>partition: one side</b>' + NODE_IDS.map(id =>
    `<label><input type="checkbox" value="${esc(id)}"> ${esc(id)}</label>`).join('') +
    '<button data-act="apply">apply</button><button data-act="close">close</button>';
  menu.style.left = ev.pageX + 'px'; menu.style.top = ev.pageY + 'px';
  menu.hidden = false;
  menu.onclick = e => {
    const act = e.target.dataset && e.target.dataset.act;
    if (act === 'close') return closeMenu();
    if (act !== 'apply') return;
    const side = [...menu.querySelectorAll('input:checked')].map(i => i.value);
    const rest = NODE_IDS.filter(id => !side.includes(id));
    if (side.length && rest.length) studio.act({kind: 'partition', groups: [side, rest]});
  };
}

if (MODE === 'studio') {
  document.getElementById('whatif').hidden = false;
  svg.addEventListener('click', e => {
    const node = e.target.dataset && e.target.dataset.node;
    if (node && isReplica(node)) openMenu(node, e);
  });
  document.getElementById('partition').onclick = openPartition;
  document.getElementById('heal').onclick = () => studio.act({kind: 'heal'});
  const who = document.getElementById('request-client');
  who.replaceChildren(...(META.clients || []).map(c => {
    const o = document.createElement('option'); o.textContent = c; return o;
  }));
  document.getElementById('request').onclick = () => studio.act({kind: 'request', client: who.value});
  document.getElementById('undo').onclick = () => studio.post('/api/undo', {});
  document.getElementById('save').onclick = async () => {
    try {
      const d = await studio.call('/api/save', {});
      document.getElementById('saved').textContent = `saved: ${d.path} — reproduce with: ${d.command}`;
    } catch (e) { document.getElementById('saved').textContent = 'error: ' + e.message; }
  };
}

// ---------------------------------------------------------------- start

// A link may open the page at a moment: #t=4550 (milliseconds), optionally &window=60
// (one of the window choices, in milliseconds).
function fromHash() {
  const args = new URLSearchParams(location.hash.slice(1));
  const zoom = document.getElementById('zoom');
  if (args.has('window') && [...zoom.options].some(o => o.value === args.get('window'))) {
    zoom.value = args.get('window');
  }
  const t = Number(args.get('t'));
  return args.has('t') && Number.isFinite(t) ? t * MS : null;
}

document.getElementById('patient').onchange = e => {
  studio.patient = e.target.value;
  studio.refresh();
};

drawLegend();
const start = fromHash();
if (MODE === 'replay') {
  ingest(DATA.rows);
  model.narration = DATA.narration;
  if (start !== null) now = Math.max(0, Math.min(start, model.end));
  render();
} else {
  studio.refresh().then(() => { if (start !== null) return studio.seek(start); });
}
