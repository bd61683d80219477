/* The APInalytics dashboard: one page, the public query API, Chart.js.
 *
 * It authenticates either with an Application ID and read key typed in (kept in
 * this browser's localStorage), or, when served by the service to a logged-in
 * owner, with the session cookie and the Application ID alone. Opened from disk,
 * it needs the service's URL.
 */
"use strict";

const RANGES = {
  // range seconds -> bucket seconds: about 60-170 points per time chart; multiples of
  // a minute or an hour so the service can answer from its rollups.
  3600: 60,
  86400: 900,
  604800: 3600,
  2592000: 21600,
};
const charts = {};
const $ = (id) => document.getElementById(id);

function stored(name) { return localStorage.getItem("apinalytics." + name) || ""; }
function store(name, value) { localStorage.setItem("apinalytics." + name, value); }

function defaultBase() {
  return location.protocol.startsWith("http") ? location.origin : "http://127.0.0.1:8080";
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function query(cfg, start, end, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const item of [].concat(v)) qs.append(k, item);
  }
  const headers = { "X-Auth-User": cfg.app };
  if (cfg.key) headers["X-Auth-Key"] = cfg.key;
  const url = `${cfg.base.replace(/\/$/, "")}/1/timeseries/${start}/${end}/?${qs}`;
  const resp = await fetch(url, {
    headers,
    // The session cookie only goes to the service that served this page.
    credentials: "same-origin",
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const msg = body.error ? body.error.message : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return body;
}

function timeLabel(seconds, bucket) {
  const d = new Date(seconds * 1000);
  return bucket >= 86400 ? d.toLocaleDateString() : d.toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

/* A group's name as shown: events sent with an empty consumer_id or function form the
 * group "", which a legend or axis would show as nothing. */
function groupLabel(name) { return name === "" ? "(none)" : name; }

/* Series of several groups onto one time axis: [labels, datasets]. */
function timeSeries(groups, start, end, bucket, scale) {
  const first = Math.floor(start / bucket) * bucket;
  const times = [];
  for (let t = first; t < end; t += bucket) times.push(t);
  const datasets = Object.entries(groups).map(([name, pairs]) => {
    const byTime = new Map(pairs.map(([t, v]) => [t, v * scale]));
    return { label: groupLabel(name), data: times.map((t) => byTime.get(t) ?? 0) };
  });
  return [times.map((t) => timeLabel(t, bucket)), datasets];
}

function draw(id, type, labels, datasets, options) {
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart($(id), {
    type,
    data: { labels, datasets },
    options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: true }, options),
  });
  $(id).dataset.ready = "true";
}

function single(groups) {
  // One bucket per group (no granularity): name -> value.
  return Object.fromEntries(Object.entries(groups).map(([k, pairs]) => [k, pairs.length ? pairs[0][1] : 0]));
}

async function refresh(cfg) {
  const range = Number(cfg.range);
  const bucket = RANGES[range];
  // The range ends at the next whole minute and starts on a boundary of the time charts'
  // buckets, so the first bar or point covers a whole bucket, not a sliver of one.
  const end = Math.ceil(Date.now() / 1000 / 60) * 60;
  const start = Math.floor((end - range) / bucket) * bucket;
  setStatus("Loading…");
  const q = (params) => query(cfg, start, end, params);
  const totalBucket = range <= 86400 ? 60 : bucket;
  const [byConsumer, byFunction, meanByFn, p95ByFn, statuses, statusOverTime, total] = await Promise.all([
    q({ granularity: bucket, group: "consumer_id" }),
    q({ group: "function" }),
    q({ group: "function", aggregation: "mean" }),
    q({ group: "function", aggregation: "percentile_95" }),
    q({ group: "status_code" }),
    q({ granularity: bucket, group: "status_code" }),
    q({ granularity: totalBucket, aggregation: "sum" }),
  ]);

  const stacked = { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } };
  let [labels, sets] = timeSeries(byConsumer.groups, start, end, bucket, 1);
  draw("calls-by-consumer", "bar", labels, sets, stacked);

  const calls = single(byFunction.groups);
  const fnNames = Object.keys(calls).sort((a, b) => calls[b] - calls[a]);
  const fnLabels = fnNames.map(groupLabel);
  draw("calls-by-function", "bar", fnLabels, [{ label: "calls", data: fnNames.map((f) => calls[f]) }],
    { indexAxis: "y", plugins: { legend: { display: false } } });

  const mean = single(meanByFn.groups);
  const p95 = single(p95ByFn.groups);
  draw("latency-by-function", "bar", fnLabels, [
    { label: "mean", data: fnNames.map((f) => (mean[f] ?? 0) / 1000) },
    { label: "p95", data: fnNames.map((f) => (p95[f] ?? 0) / 1000) },
  ], { indexAxis: "y" });

  const codes = single(statuses.groups);
  const codeNames = Object.keys(codes).sort();
  draw("status-codes", "doughnut", codeNames, [{ data: codeNames.map((c) => codes[c]) }], {});

  const errors = Object.fromEntries(Object.entries(statusOverTime.groups).filter(([c]) => Number(c) >= 500));
  [labels, sets] = timeSeries(errors, start, end, bucket, 1);
  draw("errors", "bar", labels, sets, stacked);

  $("total-title").textContent = totalBucket === 60
    ? "Total response time per minute (s)"
    : `Total response time per ${totalBucket / 3600} h (s)`;
  [labels, sets] = timeSeries(total.groups, start, end, totalBucket, 1e-6);
  sets.forEach((s) => { s.label = "total"; s.fill = true; s.pointRadius = 0; });
  draw("total-time", "line", labels, sets, { plugins: { legend: { display: false } } });

  const n = Object.values(calls).reduce((a, b) => a + b, 0);
  await showEmptyState(cfg, n === 0, end);
  setStatus(`${n.toLocaleString()} calls from ${new Date(start * 1000).toLocaleString()} to ${new Date(end * 1000).toLocaleString()}.`);
}

/* The Python client's FastAPI snippet, with the app's ID; never a key. */
function snippet(app, base) {
  return [
    "from apinalytics_client import Sender",
    "from apinalytics_client.asgi import ApinalyticsMiddleware",
    "",
    `sender = Sender(${JSON.stringify(app)}, "YOUR_WRITE_KEY", ${JSON.stringify(base.replace(/\/$/, ""))})`,
    "app.add_middleware(ApinalyticsMiddleware, sender=sender)",
  ].join("\n");
}

/* When the range has no calls, whether the app has any at all (within the year the
 * service accepts): if not, how to send some. */
async function showEmptyState(cfg, rangeEmpty, end) {
  let none = false;
  if (rangeEmpty) {
    const all = await query(cfg, end - 400 * 86400, end + 3600, {});
    none = Object.values(all.groups).every((pairs) => pairs.every(([, v]) => v === 0));
  }
  if (none) $("snippet").textContent = snippet(cfg.app, cfg.base || defaultBase());
  $("empty").hidden = !none;
}

function init() {
  const params = new URLSearchParams(location.search);
  $("base").value = params.get("base") || stored("base") || defaultBase();
  $("app").value = params.get("app") || stored("app");
  $("key").value = params.get("key") || stored("key");
  $("range").value = params.get("range") || stored("range") || "86400";
  $("settings").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const cfg = { base: $("base").value, app: $("app").value.trim(), key: $("key").value.trim(), range: $("range").value };
    for (const [k, v] of Object.entries(cfg)) store(k, v);
    refresh(cfg).catch((err) => setStatus(err.message, true));
  });
  if ($("app").value) $("settings").requestSubmit();
}

init();
