/* xdistill dashboard: runs, the pipeline graph, per-job curves, workers, the eval report.
 * Plain JS; Chart.js 3 from /static/chart.min.js. Data from the read-only JSON API
 * (docs/dashboard.md); live through /api/stream, polling every 5 s when the stream is down.
 * Everything from the API is put into the page as text, never as HTML. */
'use strict';
(function () {
  const STATES = ['pending', 'ready', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled', 'held', 'upstream_failed'];
  const COLORS = {
    pending: '#9aa5b1', ready: '#56a6f0', dispatched: '#9b7be6', running: '#1f6feb', succeeded: '#2da44e',
    failed: '#d1242f', cancelled: '#8c6e5d', held: '#d4a72c', upstream_failed: '#e8838a',
  };
  const EVENT_STATE = { // an event kind shown in a state's colour
    submitted: 'ready', dispatched: 'dispatched', started: 'running', accepted: 'running', running: 'running',
    succeeded: 'succeeded', run_succeeded: 'succeeded', failed: 'failed', run_failed: 'failed', lost: 'held',
    cancelled: 'cancelled', run_cancelled: 'cancelled', held: 'held', released: 'ready', retry: 'ready',
    upstream_failed: 'upstream_failed', fenced: 'held', checkpoint: 'pending',
  };
  const POLL_MS = 5000;

  const S = {
    runs: [], runId: null, run: null, jobId: null, job: null, workers: [], events: [], eventsFor: null,
    lastSeq: 0, charts: {}, es: null, live: false,
  };
  const $ = (id) => document.getElementById(id);

  // ---------- small helpers ----------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false)
      e.appendChild(typeof kid === 'string' || typeof kid === 'number' ? document.createTextNode(String(kid)) : kid);
    return e;
  }
  const SVGNS = 'http://www.w3.org/2000/svg';
  function sv(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const kid of kids) if (kid) e.appendChild(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  const label = (s) => String(s || '').replace(/_/g, ' ');
  const badge = (state) => el('span', { class: 'badge state-' + state, text: label(state) });
  const enc = encodeURIComponent;
  function secs(t) { // times are Unix seconds (ms and ISO 8601 text accepted)
    if (t === null || t === undefined || t === '') return null;
    const n = Number(t);
    if (Number.isFinite(n)) return n > 1e12 ? n / 1000 : n;
    const d = Date.parse(t);
    return Number.isFinite(d) ? d / 1000 : null;
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtTime(t, withDate) {
    const s = secs(t);
    if (s === null) return '—';
    const d = new Date(s * 1000);
    const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
    return withDate ? d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + hm : hm + ':' + pad2(d.getSeconds());
  }
  function fmtDur(s) {
    if (s === null || !Number.isFinite(s) || s < 0) return '—';
    if (s < 90) return Math.round(s) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }
  function fmtNum(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(Number(x))) return '—';
    x = Number(x);
    if (Math.abs(x) >= 1e6) return (x / 1e6).toFixed(2) + 'M';
    if (Math.abs(x) >= 1e4) return (x / 1e3).toFixed(1) + 'k';
    if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential(2);
    return x.toFixed(digits === undefined ? 4 : digits).replace(/\.?0+$/, '') || '0';
  }
  const shortJob = (id) => String(id || '').split('/').pop();

  async function getJSON(url) {
    const r = await fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    if (r.status === 401) {
      showBanner('This dashboard needs its token: open the URL that xcoord printed (…/?token=…).');
      throw new Error('unauthorized');
    }
    if (r.status === 404) return null;
    if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
    return r.json();
  }
  function showBanner(text) {
    const b = $('banner');
    b.textContent = text;
    b.hidden = !text;
  }

  // ---------- the address: #run=ID&job=ID ----------
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    S.runId = p.get('run') || S.runId;
    S.jobId = p.get('job') || (p.get('run') ? null : S.jobId);
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (S.runId) p.set('run', S.runId);
    if (S.jobId) p.set('job', S.jobId);
    history.replaceState(null, '', '#' + p.toString());
  }

  // ---------- loading ----------
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const [runs, workers] = await Promise.all([getJSON('/api/runs'), getJSON('/api/workers')]);
      S.runs = Array.isArray(runs) ? runs : [];
      S.workers = Array.isArray(workers) ? workers : [];
      if (!S.runId && S.runs.length) S.runId = S.runs[0].id;
      renderRuns();
      renderWorkers();
      if (S.runId) await loadRun();
      else { S.run = null; renderRunHead(); renderDag(); renderEvents(); renderEval(null); renderJob(); }
      showBanner('');
      $('updated').textContent = 'updated ' + fmtTime(Date.now() / 1000);
      document.body.dataset.ready = 'true';
    } catch (e) {
      if (e.message !== 'unauthorized') showBanner('Could not reach the coordinator: ' + e.message + ' (retrying)');
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  async function loadRun() {
    const runId = S.runId;
    if (S.eventsFor !== runId) { S.events = []; S.lastSeq = 0; S.eventsFor = runId; }
    const [run, events] = await Promise.all([
      getJSON('/api/runs/' + enc(runId)),
      getJSON('/api/events?run=' + enc(runId) + '&since=' + S.lastSeq),
    ]);
    if (runId !== S.runId) return; // changed meanwhile
    S.run = run;
    if (Array.isArray(events)) for (const ev of events) {
      S.events.push(ev);
      if (Number(ev.id) > S.lastSeq) S.lastSeq = Number(ev.id);
    }
    if (S.events.length > 500) S.events = S.events.slice(-500);
    renderRunHead();
    renderDag();
    renderEvents();
    renderEval(run ? run.report : null);
    const jobs = run && Array.isArray(run.jobs) ? run.jobs : [];
    if (!S.jobId || !jobs.some((j) => j.id === S.jobId)) S.jobId = defaultJob(jobs);
    writeHash();
    await loadJob();
  }

  async function loadJob() {
    const jobId = S.jobId;
    if (!jobId) { S.job = null; renderJob(); return; }
    const job = await getJSON('/api/jobs/' + enc(jobId));
    if (jobId !== S.jobId) return;
    S.job = job;
    renderJob();
    markSelected();
  }

  // the job worth looking at first: a running one, else a failed one, else the last trained one
  function defaultJob(jobs) {
    const trains = (j) => j.stage === 'align' || j.stage === 'distill';
    const pick = jobs.find((j) => j.state === 'running' && trains(j)) || jobs.find((j) => j.state === 'running') ||
      jobs.find((j) => j.state === 'failed' && trains(j)) ||
      [...jobs].reverse().find((j) => trains(j) && j.state !== 'pending' && j.state !== 'ready' && j.state !== 'upstream_failed') ||
      jobs[0];
    return pick ? pick.id : null;
  }

  function selectRun(id) {
    if (id === S.runId) return;
    S.runId = id;
    S.jobId = null;
    S.job = null;
    writeHash();
    renderRuns();
    refresh();
  }
  function selectJob(id) {
    S.jobId = id;
    writeHash();
    markSelected();
    loadJob().catch(() => {});
  }

  // ---------- runs ----------
  function countLine(counts) {
    const parts = STATES.filter((s) => counts[s]).map((s) => counts[s] + ' ' + label(s));
    return parts.join(' · ') || 'no jobs';
  }
  function stackbar(counts) {
    const total = STATES.reduce((a, s) => a + (counts[s] || 0), 0) || 1;
    const bar = el('div', { class: 'stackbar' });
    for (const s of STATES) if (counts[s]) {
      const seg = el('span', { class: 'state-' + s, title: counts[s] + ' ' + label(s) });
      seg.style.width = (100 * counts[s] / total) + '%';
      bar.appendChild(seg);
    }
    return bar;
  }
  function renderRuns() {
    const ul = clear($('runs'));
    if (!S.runs.length) { ul.appendChild(el('li', { class: 'empty', text: 'No runs yet: xctl submit SPEC.yaml' })); return; }
    for (const r of S.runs) {
      const counts = r.jobs && typeof r.jobs === 'object' ? r.jobs : {};
      ul.appendChild(el('li', {
        class: 'run-item' + (r.id === S.runId ? ' active' : ''), data: { run: r.id }, onclick: () => selectRun(r.id),
      },
      el('div', { class: 'row1' }, el('span', { class: 'rname', text: r.name || r.id, title: r.name }), badge(r.state)),
      el('div', { class: 'row2', text: r.id + ' · ' + fmtTime(r.created, true) }),
      stackbar(counts),
      el('div', { class: 'counts', text: countLine(counts) })));
    }
  }

  function renderRunHead() {
    const h = clear($('run-head'));
    const r = S.run;
    if (!r) { h.appendChild(el('span', { class: 'sub', text: S.runId ? 'run ' + S.runId + ' not found' : '' })); return; }
    const jobs = Array.isArray(r.jobs) ? r.jobs : [];
    const done = jobs.filter((j) => j.state === 'succeeded').length;
    h.append(el('span', { class: 'name', text: r.name || r.id }), badge(r.state),
      el('span', { class: 'sub', text: r.id + ' · submitted ' + fmtTime(r.created, true) + ' · ' + done + '/' + jobs.length + ' jobs succeeded' }));
    document.title = (r.name || r.id) + ' — xdistill';
  }

  // ---------- the pipeline graph: columns by depth (init → align blocks → join → experts → merge → final → eval) ----------
  const NODE_W = 140, NODE_H = 40, COL_GAP = 32, ROW_GAP = 8, PAD = 6;

  function layout(jobs) {
    const byId = new Map(), byName = new Map();
    jobs.forEach((j, i) => { byId.set(j.id, j); byName.set(j.name, j); j._i = i; });
    const parents = (j) => (Array.isArray(j.deps) ? j.deps : []).map((d) => byId.get(d) || byName.get(d)).filter(Boolean);
    const depth = new Map();
    const visit = (j, path) => {
      if (depth.has(j.id)) return depth.get(j.id);
      if (path.has(j.id)) return 0; // a cycle cannot come from the coordinator; do not loop on one
      path.add(j.id);
      let d = 0;
      for (const p of parents(j)) d = Math.max(d, visit(p, path) + 1);
      path.delete(j.id);
      depth.set(j.id, d);
      return d;
    };
    jobs.forEach((j) => visit(j, new Set()));
    const cols = [];
    for (const j of jobs) (cols[depth.get(j.id)] = cols[depth.get(j.id)] || []).push(j);
    const row = new Map();
    cols.forEach((col, c) => {
      if (c > 0) { // order by where the parents are, then as listed
        const bary = (j) => { const ps = parents(j); return ps.length ? ps.reduce((a, p) => a + row.get(p.id), 0) / ps.length : 0; };
        col.sort((a, b) => bary(a) - bary(b) || a._i - b._i);
      }
      const offset = 0;
      col.forEach((j, r) => row.set(j.id, r + offset));
    });
    const maxRows = Math.max(1, ...cols.map((c) => (c ? c.length : 0)));
    const height = PAD * 2 + maxRows * NODE_H + (maxRows - 1) * ROW_GAP;
    const pos = new Map();
    cols.forEach((col, c) => {
      const colH = col.length * NODE_H + (col.length - 1) * ROW_GAP;
      const top = (height - colH) / 2;
      col.forEach((j, r) => pos.set(j.id, { x: PAD + c * (NODE_W + COL_GAP), y: top + r * (NODE_H + ROW_GAP) }));
    });
    const width = PAD * 2 + cols.length * NODE_W + (cols.length - 1) * COL_GAP;
    return { pos, parents, width, height };
  }

  function renderDag() {
    const box = clear($('dag'));
    const jobs = S.run && Array.isArray(S.run.jobs) ? S.run.jobs : [];
    if (!jobs.length) { box.appendChild(el('div', { class: 'empty', text: S.run ? 'This run has no jobs.' : 'Select a run.' })); return; }
    const L = layout(jobs);
    const avail = Math.max(320, box.clientWidth || 900);
    const w = Math.min(avail, L.width * 1.1), scale = w / L.width;
    const svgEl = sv('svg', {
      id: 'dag-svg', viewBox: '0 0 ' + L.width + ' ' + L.height, width: Math.round(w), height: Math.round(L.height * scale),
      role: 'img', 'aria-label': 'pipeline of run ' + (S.run.name || S.run.id),
    });
    svgEl.appendChild(sv('defs', null, sv('marker', {
      id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto',
    }, sv('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
    const edges = sv('g', { class: 'edges' });
    for (const j of jobs) for (const p of L.parents(j)) {
      const a = L.pos.get(p.id), b = L.pos.get(j.id);
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2, dx = Math.max(14, (x2 - x1) / 2);
      edges.appendChild(sv('path', {
        class: 'dag-edge', 'data-from': p.id, 'data-to': j.id, 'marker-end': 'url(#arrow)',
        d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
      }));
    }
    svgEl.appendChild(edges);
    for (const j of jobs) {
      const { x, y } = L.pos.get(j.id);
      const state = STATES.includes(j.state) ? j.state : 'pending';
      const g = sv('g', { class: 'dag-node state-' + state, 'data-job': j.id, 'data-state': j.state, transform: `translate(${x},${y})` });
      const prog = j.progress && Number(j.progress.total) > 0 ? Math.min(1, Number(j.progress.step) / Number(j.progress.total)) : null;
      let tip = `${j.name} (${j.stage}): ${label(j.state)}`;
      if (prog !== null) tip += `\nstep ${j.progress.step} of ${j.progress.total}`;
      if (j.worker) tip += `\non ${j.worker}`;
      if (j.attempts > 1) tip += `\n${j.attempts} attempts`;
      g.appendChild(sv('title', null, tip));
      g.appendChild(sv('rect', { class: 'box', width: NODE_W, height: NODE_H, rx: 6 }));
      g.appendChild(sv('rect', { class: 'stripe', width: 5, height: NODE_H - 2, x: 1, y: 1, rx: 2 }));
      // the stage is named where the job's name does not say it (align = a merge joining layer blocks)
      const stageTag = j.stage && !String(j.name).startsWith(j.stage) ? j.stage : '';
      const room = stageTag ? 15 - Math.min(7, stageTag.length) : 18;
      g.appendChild(sv('text', { class: 'name', x: 12, y: 16 }, j.name.length > room ? j.name.slice(0, room - 1) + '…' : j.name));
      if (stageTag) g.appendChild(sv('text', { class: 'stage', x: NODE_W - 6, y: 15, 'text-anchor': 'end' }, stageTag));
      let sub = label(j.state);
      if (prog !== null && state !== 'succeeded' && Number(j.progress.step) > 0) sub += ' · ' + Math.floor(100 * prog) + '%';
      g.appendChild(sv('text', { class: 'sub', x: 12, y: 29 }, sub));
      if (j.attempts > 1) g.appendChild(sv('text', { class: 'tries', x: NODE_W - 6, y: 29, 'text-anchor': 'end' }, '×' + j.attempts));
      if (prog !== null && state !== 'succeeded') {
        g.appendChild(sv('rect', { class: 'track', x: 12, y: NODE_H - 7, width: NODE_W - 24, height: 3, rx: 1.5 }));
        g.appendChild(sv('rect', { class: 'fill', x: 12, y: NODE_H - 7, width: Math.max(0, (NODE_W - 24) * prog), height: 3, rx: 1.5 }));
      }
      g.addEventListener('click', () => selectJob(j.id));
      svgEl.appendChild(g);
    }
    box.appendChild(svgEl);
    box.dataset.rendered = 'true';
    box.dataset.nodes = String(jobs.length);
    markSelected();
    renderLegend();
  }

  function markSelected() {
    document.querySelectorAll('#dag .dag-node').forEach((g) => g.classList.toggle('selected', g.dataset.job === S.jobId));
    document.querySelectorAll('#dag .dag-edge').forEach((p) =>
      p.classList.toggle('hot', p.dataset.to === S.jobId || p.dataset.from === S.jobId));
  }

  function renderLegend() {
    const lg = $('legend');
    if (lg.childNodes.length) return;
    for (const s of STATES) lg.appendChild(el('span', { class: 'legend-item' }, el('span', { class: 'swatch state-' + s }), label(s)));
  }

  // ---------- charts ----------
  const rendered = { // marks a chart's box once Chart.js has drawn data into it
    id: 'xdRendered',
    afterRender(chart) {
      const n = chart.data.datasets.reduce((a, d) => a + d.data.filter((p) => p !== null && (typeof p !== 'object' || p.y !== null)).length, 0);
      const box = chart.canvas.parentNode;
      box.dataset.rendered = n > 0 ? 'true' : 'false';
      box.dataset.points = String(n);
      box.dataset.series = chart.data.datasets.map((d) => d.label).join('|');
    },
  };
  function drawChart(boxId, key, config, caption) {
    const box = $(boxId), cap = $('cap-' + boxId);
    box.hidden = false;
    if (cap) { cap.textContent = caption || ''; cap.hidden = !caption; }
    const old = S.charts[boxId];
    if (old && old._xdKey === key) { // same chart: new data, no flicker
      old.data.labels = config.data.labels;
      old.data.datasets.forEach((d, i) => { if (config.data.datasets[i]) d.data = config.data.datasets[i].data; });
      old.update('none');
      return;
    }
    if (old) old.destroy();
    config.plugins = [rendered];
    const o = config.options = config.options || {};
    o.animation = false;
    o.responsive = true;
    o.maintainAspectRatio = false;
    o.normalized = true;
    o.parsing = config.type === 'bar' ? o.parsing : false;
    o.plugins = Object.assign({ legend: { labels: { boxWidth: 12, font: { size: 11 } } } }, o.plugins || {});
    o.interaction = o.interaction || { mode: 'nearest', axis: 'x', intersect: false };
    const c = new Chart(box.querySelector('canvas'), config);
    c._xdKey = key;
    S.charts[boxId] = c;
  }
  function hideChart(boxId) {
    const box = $(boxId);
    if (S.charts[boxId]) { S.charts[boxId].destroy(); delete S.charts[boxId]; }
    box.hidden = true;
    box.dataset.rendered = 'false';
    if ($('cap-' + boxId)) $('cap-' + boxId).hidden = true;
  }
  const axisTitle = (text) => ({ display: true, text, font: { size: 11 } });
  const LEFT_W = 64, RIGHT_W = 52; // fixed axis widths: a job's two charts line up step for step
  const fixW = (w) => (scale) => { scale.width = w; };
  const pts = (ms, f) => ms.map((m) => ({ x: Number(m.step), y: f(m) })).filter((p) => Number.isFinite(p.x));
  const num = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));
  function layerColor(t) { // a viridis-like ramp, dark purple → yellow
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const x = Math.min(0.999, Math.max(0, t)) * (stops.length - 1), i = Math.floor(x), f = x - i;
    const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function metricsOf(job) {
    const raw = job && Array.isArray(job.metrics) ? job.metrics : [];
    const out = [];
    for (const m of raw) { // lines may come as objects or as their JSON text
      let o = m;
      if (typeof m === 'string') { try { o = JSON.parse(m); } catch (e) { continue; } }
      if (o && typeof o === 'object' && typeof o.line === 'string') { // {step, total, time, line: TEXT}
        try { o = Object.assign({ step: o.step }, JSON.parse(o.line)); } catch (e) { continue; }
      } else if (o && typeof o === 'object' && o.line && typeof o.line === 'object') {
        o = Object.assign({}, o.line, { step: o.step ?? o.line.step });
      }
      if (o && typeof o === 'object' && o.step !== undefined) out.push(o);
    }
    return out;
  }

  function renderJob() {
    const job = S.job;
    const title = $('job-title'), meta = clear($('job-meta'));
    const summary = S.run && Array.isArray(S.run.jobs) ? S.run.jobs.find((j) => j.id === S.jobId) : null;
    clear(title).append(el('span', { text: 'Job ' }), el('span', { class: 'mono', text: shortJob(S.jobId) || '—' }), ' ');
    if (job || summary) title.appendChild(badge((job || summary).state));
    const ms = metricsOf(job);
    const stage = (job && job.stage) || (summary && summary.stage) || '';
    const last = ms.length ? ms[ms.length - 1] : null;
    const prog = summary && summary.progress;
    const item = (k, v) => el('span', null, k + ' ', el('b', { text: v }));
    meta.append(item('stage', stage || '—'));
    if (prog && prog.total) meta.append(item('step', prog.step + ' / ' + prog.total));
    if (last) {
      meta.append(item('loss', fmtNum(last.loss)));
      if (stage === 'distill') meta.append(item('CE', fmtNum(last.ce)), item('KL', fmtNum(last.kl)));
      meta.append(item('tokens/s', fmtNum(last.tokens_per_s)), item('lr', fmtNum(last.lr)));
    }
    const atts = job && Array.isArray(job.attempts) ? job.attempts : [];
    if (atts.length) meta.append(item('attempts', String(atts.length)), item('worker', atts[atts.length - 1].worker || '—'));

    const empty = $('job-empty'), scale = $('layer-scale');
    scale.hidden = true;
    const key = S.jobId + ':' + stage;
    if (!ms.length) {
      hideChart('chart-loss');
      hideChart('chart-speed');
      empty.hidden = false;
      empty.textContent = !job ? 'Select a job in the pipeline.'
        : stage === 'align' || stage === 'distill' ? 'No metrics yet: the job has not reported a step.'
          : 'A ' + stage + ' job has no training curves.';
    } else {
      empty.hidden = true;
      // a job under way is drawn against its whole length, so its progress shows
      const live = summary && ['running', 'dispatched'].includes(summary.state) && prog && Number(prog.total) > 0;
      const xmax = live ? Number(prog.total) : undefined;
      if (stage === 'align' || ms.some((m) => Array.isArray(m.mse_layer))) drawAlign(ms, key, xmax);
      else drawDistill(ms, key, xmax);
      drawSpeed(ms, key, xmax);
    }
    renderAttempts(atts, job);
    if (job && S.shownJob !== job.id) { // a failed job opens on its error
      S.shownJob = job.id;
      $('job-more').open = job.state === 'failed';
    }
  }

  function drawAlign(ms, key, xmax) {
    const withLayers = ms.filter((m) => Array.isArray(m.mse_layer));
    const n = withLayers.length ? Math.max(...withLayers.map((m) => m.mse_layer.length)) : 0;
    const first = withLayers.length ? Number(withLayers[0].first_layer) || 0 : 0;
    const sets = [];
    for (let i = 0; i < n; i++) sets.push({
      label: 'layer ' + (first + i), data: pts(withLayers, (m) => num(m.mse_layer[i])),
      borderColor: layerColor(n > 1 ? i / (n - 1) : 0), borderWidth: 1, pointRadius: 0, tension: 0,
    });
    sets.push({ label: 'mean MSE (loss)', data: pts(ms, (m) => num(m.loss)), borderColor: '#111', borderWidth: 2.2, pointRadius: 0 });
    const ys = sets.flatMap((d) => d.data.map((p) => p.y)).filter((v) => v !== null && v > 0);
    const ymin = ys.length ? Math.min(...ys) * 0.85 : undefined, ymax = ys.length ? Math.max(...ys) * 1.15 : undefined;
    drawChart('chart-loss', key + ':align:' + n, {
      type: 'line', data: { datasets: sets },
      options: {
        scales: { x: { type: 'linear', max: xmax, title: axisTitle('step') }, y: { type: 'logarithmic', min: ymin, max: ymax, title: axisTitle('MSE (log)'), afterFit: fixW(LEFT_W),
          ticks: { maxTicksLimit: 6, callback: (v) => Number(v).toPrecision(1) } } },
        layout: { padding: { right: RIGHT_W } },
        plugins: { legend: { display: false } },
      },
    }, 'Align: attention-output MSE per layer, and the mean');
    const scale = clear($('layer-scale'));
    if (n > 0) {
      const ramp = el('span', { class: 'ramp' });
      ramp.style.background = `linear-gradient(90deg, ${layerColor(0)}, ${layerColor(0.25)}, ${layerColor(0.5)}, ${layerColor(0.75)}, ${layerColor(1)})`;
      scale.append(el('span', { text: 'layer ' + first }), ramp, el('span', { text: 'layer ' + (first + n - 1) + ' · thick: mean' }));
      scale.hidden = false;
    }
  }

  function drawDistill(ms, key, xmax) {
    drawChart('chart-loss', key + ':distill', {
      type: 'line',
      data: {
        datasets: [
          { label: 'loss', data: pts(ms, (m) => num(m.loss)), borderColor: '#111', borderWidth: 2, pointRadius: 0, yAxisID: 'y' },
          { label: 'CE', data: pts(ms, (m) => num(m.ce)), borderColor: '#1f6feb', borderWidth: 1.5, pointRadius: 0, yAxisID: 'y' },
          { label: 'KL (right)', data: pts(ms, (m) => num(m.kl)), borderColor: '#e8710a', borderWidth: 1.5, pointRadius: 0, yAxisID: 'y1' },
        ],
      },
      options: {
        scales: {
          x: { type: 'linear', max: xmax, title: axisTitle('step') },
          y: { title: axisTitle('CE, loss (nats)'), afterFit: fixW(LEFT_W) },
          y1: { position: 'right', title: axisTitle('top-k KL'), grid: { drawOnChartArea: false }, afterFit: fixW(RIGHT_W) },
        },
        plugins: { legend: { position: 'top', align: 'end' } },
      },
    }, 'Distill: loss = 0.9·CE + 0.1·KL (top-k)');
  }

  function drawSpeed(ms, key, xmax) {
    const lrs = ms.map((m) => num(m.lr)).filter((v) => v !== null);
    const lrMax = lrs.length ? Math.max(...lrs) : 1;
    drawChart('chart-speed', key + ':speed', {
      type: 'line',
      data: {
        datasets: [
          { label: 'tokens/s', data: pts(ms, (m) => num(m.tokens_per_s)), borderColor: '#2da44e', backgroundColor: 'rgba(45,164,78,.12)', fill: true, borderWidth: 1.5, pointRadius: 0, yAxisID: 'y' },
          { label: 'learning rate (right)', data: pts(ms, (m) => num(m.lr)), borderColor: '#8a94a0', borderDash: [4, 3], borderWidth: 1.2, pointRadius: 0, yAxisID: 'y1' },
        ],
      },
      options: {
        scales: {
          x: { type: 'linear', max: xmax, title: axisTitle('step') },
          y: { beginAtZero: true, title: axisTitle('tokens/s'), afterFit: fixW(LEFT_W), ticks: { maxTicksLimit: 4, callback: (v) => fmtNum(v) } },
          y1: { position: 'right', min: 0, max: lrMax > 0 ? lrMax * 1.15 : 1, grid: { drawOnChartArea: false }, afterFit: fixW(RIGHT_W),
            ticks: { maxTicksLimit: 4, callback: (v) => (v === 0 ? '0' : Number(v).toExponential(1)) } },
        },
        plugins: { legend: { display: false } },
      },
    }, 'Throughput: tokens/s (green), learning rate (dashed, right)');
  }

  function renderAttempts(atts, job) {
    const tb = clear($('attempts').tBodies[0]);
    for (const a of atts) {
      const st = secs(a.started), en = secs(a.ended);
      tb.appendChild(el('tr', null,
        el('td', { text: a.epoch ?? '—' }), el('td', { class: 'nowrap', text: a.worker || '—' }), el('td', null, badge(a.state || 'pending')),
        el('td', { class: 'nowrap', text: fmtTime(a.started, true).slice(5) }), el('td', { text: st !== null ? fmtDur((en ?? Date.now() / 1000) - st) : '—' }),
        el('td', { text: a.exit_code ?? '—' }), el('td', { class: 'err', text: a.error || '' })));
    }
    if (!atts.length) tb.appendChild(el('tr', null, el('td', { colspan: 7, class: 'empty', text: 'not dispatched yet' })));
    const lines = job && Array.isArray(job.log) ? job.log : [];
    $('job-log').textContent = lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') || '(no log lines)';
  }

  // ---------- the eval report: recovery per task, C_α over α ∈ [0, 0.2] ----------
  function renderEval(report) {
    const sum = clear($('eval-summary')), empty = $('eval-empty');
    const tasks = report && Array.isArray(report.tasks) ? report.tasks.filter((t) => t && t.task) : [];
    if (!tasks.length) {
      hideChart('chart-recovery');
      hideChart('chart-calpha');
      empty.hidden = false;
      const ev = S.run && Array.isArray(S.run.jobs) ? S.run.jobs.find((j) => j.stage === 'eval') : null;
      empty.textContent = 'No evaluation report yet' + (ev ? ' (eval is ' + label(ev.state) + ').' : '.');
      return;
    }
    empty.hidden = true;
    const curve = Array.isArray(report.c_alpha) ? report.c_alpha : [];
    const c0 = curve.length ? Number(curve[0].c) : null;
    const item = (k, v) => el('span', null, k + ' ', el('b', { text: v }));
    sum.append(item('tasks', String(tasks.length)),
      item('lossless (C₀ ≥ 0.5)', report.lossless ? 'yes' : 'no'),
      item('C₀', c0 === null ? '—' : c0.toFixed(2)),
      item('α*', report.alpha_star === null || report.alpha_star === undefined ? 'none ≤ 0.2' : String(report.alpha_star)));
    // C_α counts the tasks the report names (older reports: all); in-domain perplexity is text the
    // student was fine-tuned on, labelled so that its recovery is not read as the teacher's quality
    const counted = Array.isArray(report.c_alpha_tasks) ? new Set(report.c_alpha_tasks) : null;
    const isCounted = (t) => !counted || counted.has(t.task);
    const scoredTasks = tasks.filter(isCounted);
    const mean = scoredTasks.reduce((a, t) => a + (Number(t.recovery) || 0), 0) / Math.max(1, scoredTasks.length);
    sum.append(item('C_α over', scoredTasks.length + ' of ' + tasks.length + ' tasks'),
      item('mean recovery there', (100 * mean).toFixed(1) + '%'));
    const inDomain = tasks.filter((t) => t.in_domain === true).length;
    if (inDomain) sum.append(item('in-domain (fine-tuned on)', String(inDomain)));

    const rec = tasks.map((t) => num(t.recovery));
    const lo = Math.min(0.9, ...rec.filter((v) => v !== null).map((v) => v - 0.02));
    const hi = Math.max(1.04, ...rec.filter((v) => v !== null).map((v) => v + 0.01));
    drawChart('chart-recovery', 'rec:' + S.runId + ':' + tasks.length, {
      type: 'bar',
      data: {
        labels: tasks.map((t) => t.task + (t.in_domain === true ? ' (in-domain)' : isCounted(t) ? '' : ' (not in C_α)')),
        datasets: [
          { type: 'bar', label: 'recovery = student / teacher', data: rec,
            backgroundColor: rec.map((v, i) => (!isCounted(tasks[i]) ? '#b8bec6' : v >= 1 ? '#2da44e' : v >= 0.95 ? '#56a6f0' : '#e8710a')) },
          { type: 'line', label: 'teacher = 1', data: tasks.map(() => 1), borderColor: '#111', borderDash: [5, 4], borderWidth: 1.2, pointRadius: 0 },
        ],
      },
      options: {
        interaction: { mode: 'index', intersect: false },
        scales: { y: { min: lo, max: hi, title: axisTitle('student / teacher') }, x: { ticks: { font: { size: 10.5 }, maxRotation: 40, minRotation: 30 } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: (ctx) => {
            const t = tasks[ctx.dataIndex];
            if (ctx.datasetIndex !== 0 || !t) return '';
            return t.kind === 'perplexity' ? `ppl: teacher ${fmtNum(t.teacher_ppl, 3)}, student ${fmtNum(t.student_ppl, 3)}`
              : `score: teacher ${fmtNum(t.teacher, 3)}, student ${fmtNum(t.student, 3)}`;
          } } },
        },
      },
    }, 'Recovery per task: student / teacher');

    // C_α is a step function of α; drawn densely from the tasks, the report's points on top
    const scored = scoredTasks.filter((t) => Number.isFinite(Number(t.student)) && Number.isFinite(Number(t.teacher)));
    const dense = [];
    for (let i = 0; i <= 200; i++) {
      const a = i / 1000;
      dense.push({ x: a, y: scored.length ? scored.filter((t) => Number(t.student) >= (1 - a) * Number(t.teacher)).length / scored.length : null });
    }
    const marks = curve.map((p) => ({ x: Number(p.alpha), y: Number(p.c) })).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    const star = report.alpha_star === null || report.alpha_star === undefined ? [] : [{ x: Number(report.alpha_star), y: marks.find((p) => p.x === Number(report.alpha_star))?.y ?? 0.5 }];
    drawChart('chart-calpha', 'calpha:' + S.runId, {
      type: 'line',
      data: {
        datasets: [
          { label: 'C_α from the tasks', data: dense, borderColor: '#1f6feb', backgroundColor: 'rgba(31,111,235,.10)', fill: true, stepped: 'after', borderWidth: 2, pointRadius: 0 },
          { label: 'report', data: marks, pointStyle: 'circle', showLine: false, pointRadius: 3.5, pointBackgroundColor: '#1f6feb', borderColor: '#fff' },
          { label: 'α*', data: star, showLine: false, pointRadius: 7, pointStyle: 'rectRot', pointBackgroundColor: '#d1242f', borderColor: '#fff' },
          { label: 'C = 0.5', pointStyle: 'line', data: [{ x: 0, y: 0.5 }, { x: 0.2, y: 0.5 }], borderColor: '#d1242f', borderDash: [5, 4], borderWidth: 1, pointRadius: 0 },
        ],
      },
      options: {
        scales: {
          x: { type: 'linear', min: 0, max: 0.2, title: axisTitle('α (tolerance: S ≥ (1 − α)·T)'), ticks: { stepSize: 0.02 } },
          y: { min: 0, max: 1, title: axisTitle('C_α'), ticks: { stepSize: 0.25, callback: (v) => Number(v).toFixed(2) } },
        },
        plugins: {
          legend: { position: 'top', align: 'end', labels: { usePointStyle: true, boxWidth: 8, font: { size: 10.5 } } },
        },
      },
    }, 'C_α: share of tasks with student ≥ (1 − α)·teacher');
  }

  // ---------- workers ----------
  function devicesText(devs) {
    if (!Array.isArray(devs) || !devs.length) return '—';
    const groups = new Map();
    for (const d of devs) {
      const name = d.kind === 'cpu' ? 'CPU' : String(d.name || d.kind || '?').replace(/^NVIDIA /, '').replace(/ HBM\w*$/, '');
      groups.set(name, (groups.get(name) || 0) + 1);
    }
    return [...groups].map(([n, c]) => (c > 1 ? c + '× ' : '') + n).join(', ');
  }
  function renderWorkers() {
    const tb = clear($('workers').tBodies[0]);
    if (!S.workers.length) { tb.appendChild(el('tr', null, el('td', { colspan: 3, class: 'empty', text: 'No workers connected.' }))); return; }
    for (const w of S.workers) {
      let age = w.heartbeat_age_ms !== undefined ? num(w.heartbeat_age_ms) : num(w.last_heartbeat_age_s) !== null ? num(w.last_heartbeat_age_s) * 1000 : null;
      const cls = age === null ? 'hb-lost' : age < 5000 ? 'hb-ok' : age < 30000 ? 'hb-late' : 'hb-lost';
      const job = w.job || (typeof w.attempt === 'string' ? w.attempt.split('#')[0] : null);
      const jobCell = el('td');
      if (job) {
        const runOf = job.split('/')[0];
        jobCell.appendChild(el('a', { class: 'joblink', text: shortJob(job), title: job, onclick: () => { if (runOf !== S.runId) { S.runId = runOf; S.jobId = job; refresh(); } else selectJob(job); } }));
      } else jobCell.textContent = 'idle';
      tb.appendChild(el('tr', null,
        el('td', null,
          el('div', { class: 'w-name' }, el('span', { class: 'dot ' + (w.state === 'lost' ? 'state-failed' : 'state-succeeded') }), w.name,
            w.draining ? el('span', { class: 'tag', text: 'draining' }) : null),
          el('div', { class: 'dev', text: devicesText(w.devices) })),
        el('td', { class: cls, text: age === null ? '—' : (age / 1000).toFixed(1) + ' s' }),
        jobCell));
    }
  }

  // ---------- events ----------
  function renderEvents() {
    const ol = clear($('events'));
    const evs = S.events.slice(-200).reverse();
    if (!evs.length) { ol.appendChild(el('li', { class: 'empty', text: 'No events.' })); return; }
    for (const ev of evs) {
      const st = EVENT_STATE[ev.kind] || 'pending';
      ol.appendChild(el('li', null, el('span', { class: 't', text: fmtTime(ev.time), title: fmtTime(ev.time, true) }),
        el('span', { class: 'k' }, el('span', { class: 'badge state-' + st, text: label(ev.kind) })),
        el('span', { class: 'j mono', text: ev.job ? shortJob(ev.job) : 'run', title: ev.job || '' }),
        el('span', { class: 'm', text: ev.message || '' })));
    }
  }

  // ---------- live updates ----------
  let timer = null;
  function soon() { clearTimeout(timer); timer = setTimeout(refresh, 250); }
  function setConn(kind, text) { const c = $('conn'); c.className = 'conn conn-' + kind; c.textContent = text; }
  function connect() {
    if (!window.EventSource) { setConn('polling', 'polling'); return; }
    const es = new EventSource('/api/stream');
    S.es = es;
    es.addEventListener('open', () => { S.live = true; setConn('live', 'live'); });
    es.addEventListener('change', () => soon());
    es.addEventListener('error', () => { S.live = false; setConn('polling', 'polling every 5 s'); });
  }
  // without the stream: everything every 5 s; with it: changes come as events, the workers'
  // heartbeat ages every 5 s, and everything every 30 s in case a change was not announced
  setInterval(() => {
    if (!S.live) refresh();
    else getJSON('/api/workers').then((w) => { if (Array.isArray(w)) { S.workers = w; renderWorkers(); } }).catch(() => {});
  }, POLL_MS);
  setInterval(() => { if (S.live) refresh(); }, 30000);
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(renderDag, 150); });
  window.addEventListener('hashchange', () => {
    const r = S.runId;
    readHash();
    if (r !== S.runId) { S.job = null; renderRuns(); refresh(); return; }
    if (!S.jobId && S.run && Array.isArray(S.run.jobs)) S.jobId = defaultJob(S.run.jobs);
    writeHash();
    markSelected();
    loadJob().catch(() => {});
  });

  function start() {
    if (!window.Chart) { showBanner('Chart.js did not load (/static/chart.min.js).'); return; }
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 11;
    Chart.defaults.color = '#4a545e';
    readHash();
    refresh();
    connect();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
