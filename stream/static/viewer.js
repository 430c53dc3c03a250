// fes-live viewer: one RTCPeerConnection to the viewer process (stream/view.py), video + data channel "events".
// No build step, no dependencies. window.__probe exposes what tests and curious users want to see.
'use strict';

const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TOKEN = params.get('token') || '';
const GATHER_TIMEOUT_MS = 3000;   // aiortc needs a complete offer (no trickle ICE): wait for it, but bounded
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];

const probe = window.__probe = {
  iceState: 'new', connState: 'new', gatherState: 'new', dcState: 'closed', tStart: performance.now(),
  tIceConnected: null, tDcOpen: null, tFirstFrame: null, connects: 0, msgs: 0, byType: {}, events: 0, eventTypes: {}, promoted: 0,
  lastMsg: null, frames: 0, bandOk: 0, bandBad: 0, latencies: [], serverLatencies: [], plotDraws: 0,
  plotPoints: 0, levelPoints: 0, timeline: 0, stream: '', streams: [], errors: [], camera: null, state: 'connecting',
  iceServers: null,
};
const log = (...a) => console.log('[fes-live]', ...a);
function fail(where, e) { const m = `${where}: ${e && e.message || e}`; probe.errors.push(m); log(m); }

// ------------------------------------------------------------------------------------------ state per stream
let cfg = {width: 640, height: 360, band: 24, bits: 16, plot_seconds: 20};
const streams = new Map();   // id -> {status, face, intensity: [[pts_s, value, level]], thresholds, expressions, stats}
const frameMeta = new Map(); // frame token -> per-frame metadata sent by the server just before the frame
let selected = '', showing = '';   // the user's pick ('' = automatic), what the server shows
function S(id) {
  if (!streams.has(id)) streams.set(id, {status: 'live', face: 'none', intensity: [], expressions: new Map(),
                                         stats: null, lastPts: 0});
  return streams.get(id);
}

// ------------------------------------------------------------------------------------------ connection
let pc = null, dc = null, attempt = 0, cameraStream = null, reconnectTimer = null;

async function waitGathering(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise(resolve => {
    const t = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      probe.gatherState = pc.iceGatheringState;
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
  if (pc.iceGatheringState !== 'complete') fail('ice', `gathering not complete after ${GATHER_TIMEOUT_MS} ms`);
}

const withToken = path => path + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : '');

// STUN/TURN only when the viewer is configured with some (its `ice_servers`): by default none, so nothing is asked
// of a third-party server and browser and viewer must reach each other directly.
async function pageConfig() {
  const res = await fetch(withToken('api/config'), {cache: 'no-store'});
  const conf = await res.json();
  if (!res.ok) throw new Error(conf.error || `HTTP ${res.status}`);
  return conf;
}

async function connect() {
  clearTimeout(reconnectTimer);
  probe.connects++;
  setConn(attempt ? 'reconnecting' : 'connecting', 'warn');
  let conf;
  try { conf = await pageConfig(); } catch (e) { fail('config', e); scheduleReconnect(); return; }
  const mine = pc = new RTCPeerConnection({iceServers: conf.iceServers || []});
  probe.iceServers = mine.getConfiguration().iceServers;
  pc.oniceconnectionstatechange = () => {
    probe.iceState = mine.iceConnectionState;
    if (mine.iceConnectionState === 'connected' && probe.tIceConnected === null)
      probe.tIceConnected = performance.now() - probe.tStart;
  };
  pc.onconnectionstatechange = () => {
    probe.connState = mine.connectionState;
    if (mine !== pc) return;
    if (mine.connectionState === 'connected') { attempt = 0; setConn('live', 'ok'); }
    if (['failed', 'disconnected', 'closed'].includes(mine.connectionState)) scheduleReconnect();
  };
  pc.ontrack = e => {
    const v = $('video');
    v.srcObject = e.streams[0] || new MediaStream([e.track]);
    v.play().catch(err => fail('play', err));
  };
  dc = pc.createDataChannel('events');   // before createOffer: the offer then has its SCTP m-line
  dc.onopen = () => { probe.dcState = 'open'; probe.tDcOpen = performance.now() - probe.tStart; };
  dc.onclose = () => { probe.dcState = 'closed'; if (mine === pc) scheduleReconnect(); };
  dc.onmessage = e => onMessage(e.data);
  if (cameraStream) {
    pc.addTransceiver(cameraStream.getVideoTracks()[0], {direction: 'sendrecv', streams: [cameraStream]});
  } else {
    pc.addTransceiver('video', {direction: 'recvonly'});
  }
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc);
    const res = await fetch(withToken('offer'), {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type, stream: selected}),
    });
    const answer = await res.json();
    if (!res.ok) throw new Error(answer.error || `HTTP ${res.status}`);
    await pc.setRemoteDescription(answer);
  } catch (e) {
    fail('connect', e);
    scheduleReconnect();
  }
}

function scheduleReconnect() {
  if (reconnectTimer) return;
  setConn('reconnecting', 'warn');
  showBanner('reconnecting…');
  const old = pc;
  pc = null;
  if (old) old.close();
  const wait = RECONNECT_MS[Math.min(attempt++, RECONNECT_MS.length - 1)];
  reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, wait);
}

function send(msg) { if (dc && dc.readyState === 'open') dc.send(JSON.stringify(msg)); }

async function useCamera() {
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
    const track = cameraStream.getVideoTracks()[0];
    probe.camera = {label: track.label, settings: track.getSettings()};
    $('self').srcObject = cameraStream;
    $('self').classList.remove('hidden');
    $('camera').textContent = 'Camera on';
    $('camera').disabled = true;
    attempt = 0;
    if (pc) { const old = pc; pc = null; old.close(); }
    connect();
  } catch (e) {
    fail('camera', e);
    showBanner(`camera: ${e.name || e}`);
  }
}

// ------------------------------------------------------------------------------------------ messages
function onMessage(text) {
  let m;
  try { m = JSON.parse(text); } catch (e) { fail('message', e); return; }
  probe.msgs++;
  probe.byType[m.t] = (probe.byType[m.t] || 0) + 1;
  if (m.t !== 'frame') probe.lastMsg = m;
  if (m.t === 'frame') {
    m.rx = Date.now();
    frameMeta.set(m.k, m);
    if (frameMeta.size > 512) frameMeta.delete(frameMeta.keys().next().value);
    if (m.s) { const s = S(m.s); s.face = m.f; }
  } else if (m.t === 'hello') {
    cfg = m;
    probe.thresholds = m.thresholds;
    $('camera').hidden = !m.camera;   // --no-camera
    $('plotsecs').textContent = m.plot_seconds;
    $('stage').style.aspectRatio = `${m.width} / ${m.height}`;
    setStreams(m.streams);
  } else if (m.t === 'streams') {
    setStreams(m.streams);
  } else if (m.t === 'selected') {
    selected = probe.stream = m.stream;
    renderStreamList();
    renderTimeline();
  } else if (m.t === 'showing') {
    showing = probe.showing = m.stream;
    renderStreamList();
    renderTimeline();
  } else if (m.t === 'event') {
    try { onEvent(m.e); } catch (e) { fail('event', e); }
  } else if (m.t === 'error') {
    fail('server', m.error);
    showBanner(m.error);
  }
}

function setStreams(list) {
  for (const st of list) { const s = S(st.id); s.status = st.status; s.face = st.face; s.source = st.source; }
  probe.streams = list.map(s => s.id).filter(id => id !== 'pipeline');
  renderStreamList();
}

function onEvent(e) {
  probe.events++;
  probe.eventTypes[e.type] = (probe.eventTypes[e.type] || 0) + 1;
  const s = S(e.stream_id), d = e.data || {};
  if (e.type === 'intensity') {
    d.frames.forEach((f, i) => {
      const t = d.pts_s[i];
      const level = d.levels ? d.levels[i] : null;  // absent from detectors before the expression level
      if (t !== null && t !== undefined && t >= s.lastPts) { s.intensity.push([t, d.values[i], level]); s.lastPts = t; }
    });
    const keep = Math.max(2000, cfg.plot_seconds * 120);
    if (s.intensity.length > keep) s.intensity.splice(0, s.intensity.length - keep);
  } else if (e.type === 'expression.onset') {
    s.expressions.set(d.track, {provisional: true, track: d.track, onset: d.onset, intensity: d.intensity, seq: e.seq});
  } else if (e.type === 'expression.cancel') {
    const x = s.expressions.get(d.track);
    if (x) x.cancelled = true;
  } else if (e.type === 'expression') {
    const key = d.track >= 0 ? d.track : `x${e.seq}`;
    if (s.expressions.has(key) && s.expressions.get(key).provisional) probe.promoted++;  // onset -> final
    s.expressions.set(key, {...d, provisional: false, seq: e.seq});
  } else if (e.type === 'face') {
    s.face = d.state;
  } else if (e.type === 'stream') {
    s.status = d.status === 'started' ? 'live' : d.status;
    s.message = d.message;
    renderStreamList();
  } else if (e.type === 'stats') {
    s.stats = d;
  } else if (e.type === 'supervisor') {   // a pipeline process crashed and was restarted (or given up)
    s.supervisor = `${d.child} ${d.status} (exit ${d.exitcode}, ${d.restarts} restarts)`;
  }
  if (e.stream_id === currentId() && e.type.startsWith('expression')) renderTimeline();
}

function currentId() { return selected || showing || (probe.streams[0] || ''); }

// ------------------------------------------------------------------------------------------ rendering
function renderStreamList() {
  const sel = $('stream');
  const ids = [...streams.keys()].filter(id => id !== 'pipeline');
  const want = ids.map(id => `${id}|${S(id).status}`).join(',');
  if (sel.dataset.key !== want) {
    sel.dataset.key = want;
    sel.innerHTML = ids.length ? '' : '<option value="">(waiting for a stream)</option>';
    for (const id of ids) {
      const o = document.createElement('option');
      o.value = id;
      o.textContent = `${id}${S(id).status !== 'live' ? ` (${S(id).status})` : ''}`;
      sel.appendChild(o);
    }
  }
  sel.value = currentId();
}

function setConn(text, cls) {
  probe.state = text;
  $('conn').textContent = text;
  $('conn').className = `badge ${cls}`;
}

function showBanner(text, cls = '') {
  const b = $('banner');
  b.textContent = text;
  b.className = text ? `banner ${cls}` : 'banner hidden';
}

function updateBanner() {
  if (!pc || probe.state === 'reconnecting') return showBanner('reconnecting…');
  const id = currentId();
  if (!id) return showBanner('waiting for a stream');
  const s = S(id);
  if (s.status === 'ended') return showBanner('stream ended');
  if (s.status === 'error') return showBanner(`stream error${s.message ? ': ' + s.message : ''}`);
  if (s.face === 'lost' || s.face === 'none') return showBanner('no face', 'nofaces');
  showBanner('');
}

const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? '–' : Number(v).toFixed(d);

function renderTimeline() {
  const s = S(currentId()), ol = $('timeline');
  const items = [...s.expressions.values()].sort((a, b) => (b.onset.pts_s - a.onset.pts_s) || (b.seq - a.seq));
  ol.innerHTML = '';
  for (const x of items) {
    const li = document.createElement('li');
    if (x.provisional) {
      li.className = 'provisional' + (x.cancelled ? ' cancelled' : '');
      li.innerHTML = `<span class="when">${fmt(x.onset.pts_s, 2)} s</span><span class="what">onset…</span>
        frame ${x.onset.frame}, intensity ${fmt(x.intensity, 2)}${x.cancelled ? ' (cancelled)' : ''}`;
    } else {
      li.className = x.kind;
      const probs = Object.entries(x.emotion_probs || {}).sort((a, b) => b[1] - a[1]).slice(0, 3)
        .map(([k, p]) => `${k} ${fmt(p, 2)}`).join(', ');
      li.innerHTML = `<span class="when">${fmt(x.onset.pts_s, 2)}–${fmt(x.offset.pts_s, 2)} s</span>
        <span class="what">${x.kind} · ${x.emotion || 'expression'}</span> score ${fmt(x.score, 2)},${x.peak_level === undefined ? '' : ` level ${fmt(x.peak_level, 2)},`}
        ${fmt(x.duration_s * 1000, 0)} ms, frames ${x.onset.frame}–${x.apex.frame}–${x.offset.frame}
        <br><small>${probs}${probs ? ' · ' : ''}${(x.models || []).join('+')} · latency ${fmt(x.latency_s * 1000, 0)} ms</small>`;
    }
    ol.appendChild(li);
  }
  probe.timeline = items.length;
  probe.timelineItems = items.map(x => ({track: x.track, final: !x.provisional, cancelled: !!x.cancelled,
                                         kind: x.kind || null, emotion: x.emotion || null, onset: x.onset.frame}));
  probe.timelineText = ol.innerText;
}

function median(a) { if (!a.length) return null; const b = [...a].sort((x, y) => x - y); return b[b.length >> 1]; }
function pct(a, q) { if (!a.length) return null; const b = [...a].sort((x, y) => x - y); return b[Math.min(b.length - 1, Math.floor(q * b.length))]; }

function renderStats() {
  const s = S(currentId()), st = s.stats || S('pipeline').stats, v = $('video');
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  const recent = probe.latencies.slice(-150);
  const rows = [
    ['stream', `${currentId() || '–'} (${s.status}, face ${s.face})`],
    ['detector fps in / out', st ? `${fmt(st.fps_in)} / ${fmt(st.fps_out)}` : '–'],
    ['spotted at', st && st.spot_fps ? `${fmt(st.spot_fps)} fps` : '–'],  // the rate its frames' timestamps show
    ['capture → event p50 / p99', st ? `${fmt(st.latency_ms_p50, 0)} / ${fmt(st.latency_ms_p99, 0)} ms` : '–'],
    ['drops ingest / detector', st ? `${st.dropped_ingest} / ${st.dropped_detector}` : '–'],
    ['detector queue', st ? st.queue : '–'],
    ['glass-to-glass p50 / p90', recent.length ? `${fmt(median(recent), 0)} / ${fmt(pct(recent, .9), 0)} ms` : '–'],
    ['video', `${v.videoWidth}×${Math.max(0, v.videoHeight - cfg.band)}, ${fmt(probe.videoFps)} fps, dropped ${q ? q.droppedVideoFrames : '–'}`],
    ['connection', `${probe.connState} (ice ${probe.iceState})`],
  ];
  if (S('pipeline').supervisor) rows.push(['last restart', S('pipeline').supervisor]);
  $('stats').innerHTML = rows.map(([k, val]) => `<tr><td>${k}</td><td>${val}</td></tr>`).join('');
}

function drawPlot() {
  const c = $('plot'), g = c.getContext('2d');
  const W = c.width = c.clientWidth || 800, H = c.height = 180;
  g.fillStyle = '#1c2127'; g.fillRect(0, 0, W, H);
  const s = S(currentId()), pts = s.intensity, span = cfg.plot_seconds;
  const t0 = pts.length ? Math.max(pts[0][0], pts[pts.length - 1][0] - span) : 0, tEnd = t0 + span;
  const X = t => (t - t0) / span * (W - 30) + 25, Y = v => H - 14 - Math.max(0, Math.min(1, v)) * (H - 24);
  g.strokeStyle = '#333a43'; g.fillStyle = '#7b8794'; g.font = '10px sans-serif'; g.lineWidth = 1;
  for (const v of [0, .25, .5, .75, 1]) {
    g.beginPath(); g.moveTo(25, Y(v)); g.lineTo(W, Y(v)); g.stroke(); g.fillText(v.toFixed(2), 0, Y(v) + 3);
  }
  for (let t = Math.ceil(t0 / 2) * 2; t <= tEnd; t += 2) g.fillText(`${t}s`, X(t) - 6, H - 2);
  g.fillStyle = 'rgba(120, 220, 140, .25)';
  for (const x of s.expressions.values()) {
    if (x.provisional || x.cancelled) continue;
    g.fillRect(X(x.onset.pts_s), 4, Math.max(2, X(x.offset.pts_s) - X(x.onset.pts_s)), H - 18);
  }
  const thr = cfg.thresholds || [];
  g.strokeStyle = g.fillStyle = '#e0a030'; g.setLineDash([5, 4]);
  for (const {value, label} of thr) {
    g.beginPath(); g.moveTo(25, Y(value)); g.lineTo(W, Y(value)); g.stroke(); g.fillText(label, W - 48, Y(value) - 3);
  }
  g.setLineDash([]);
  // the expression level (how far the face is from the person's neutral), then GIM's I(t) over it
  g.strokeStyle = '#9ccc65'; g.lineWidth = 2; g.beginPath();
  let m = 0;
  for (const [t, , level] of pts) {
    if (t < t0 || level === null || level === undefined) continue;
    m ? g.lineTo(X(t), Y(level)) : g.moveTo(X(t), Y(level)); m++;
  }
  g.stroke();
  g.strokeStyle = '#4fc3f7'; g.lineWidth = 2; g.beginPath();
  let n = 0;
  for (const [t, v] of pts) {
    if (t < t0) continue;
    n ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v)); n++;
  }
  g.stroke();
  probe.plotPoints = n;
  probe.levelPoints = m;
  probe.plotDraws++;
}

// ------------------------------------------------------------------------------------------ frame band -> latency
// The server appends a band of 16 black/white blocks below each picture: a 12-bit frame token and 4 check bits.
// Reading it back from the displayed frame ties the frame to its metadata (capture time), so the latency below is
// capture -> display on the one system clock both ends share.
const scratch = document.createElement('canvas');
function readToken(v) {
  const w = v.videoWidth, h = v.videoHeight, band = cfg.band, bits = cfg.bits;
  if (!w || h <= band) return null;
  scratch.width = w; scratch.height = band;
  const g = scratch.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, h - band, w, band, 0, 0, w, band);
  const row = g.getImageData(0, band >> 1, w, 1).data, step = Math.floor(w / bits);
  let word = 0;
  for (let i = 0; i < bits; i++) {
    const x = i * step + (step >> 1), lum = (row[4 * x] + row[4 * x + 1] + row[4 * x + 2]) / 3;
    word = (word << 1) | (lum > 127 ? 1 : 0);
  }
  const token = word >> 4, check = (token >> 8) ^ ((token >> 4) & 15) ^ (token & 15);
  return (word & 15) === check ? token : null;
}

let fpsCount = 0, fpsT0 = performance.now();
function onFrame(now, meta) {
  const v = $('video');
  probe.frames++;
  if (probe.tFirstFrame === null) probe.tFirstFrame = performance.now() - probe.tStart;
  fpsCount++;
  if (now - fpsT0 > 1000) { probe.videoFps = fpsCount * 1000 / (now - fpsT0); fpsCount = 0; fpsT0 = now; }
  const token = readToken(v);
  if (token === null) { probe.bandBad++; }
  else {
    probe.bandOk++;
    const m = frameMeta.get(token), shown = performance.timeOrigin + meta.expectedDisplayTime;
    if (m && shown - m.rx < 5000) {
      if (m.c) { probe.latencies.push(shown - m.c); if (probe.latencies.length > 1000) probe.latencies.shift(); }
      probe.serverLatencies.push(shown - m.x);
      if (probe.serverLatencies.length > 1000) probe.serverLatencies.shift();
      probe.lastFrame = {stream: m.s, index: m.i, face: m.f};
      $('facetag').textContent = m.s ? `${m.s} · frame ${m.i} · face ${m.f}` : '';
    }
  }
  v.requestVideoFrameCallback(onFrame);
}

// ------------------------------------------------------------------------------------------ start
$('stream').onchange = e => { selected = e.target.value; send({t: 'select', stream: selected}); renderTimeline(); };
$('camera').onclick = useCamera;
$('video').requestVideoFrameCallback(onFrame);
setInterval(() => { drawPlot(); renderStats(); updateBanner(); }, 250);
setInterval(() => send({t: 'report', probe: {latency_ms_p50: median(probe.latencies.slice(-150)),
  frames: probe.frames, msgs: probe.msgs, errors: probe.errors.slice(-3)}}), 10000);
if (params.get('camera') === '1') useCamera(); else connect();
