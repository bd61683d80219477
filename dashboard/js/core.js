/* Shared constants and formatting. The dashboard's files are classic deferred scripts
 * that each add to one namespace, `Apx`: Chromium refuses ES modules on a page opened
 * from disk (file://), and the dashboard must work that way too. */
(function (A) {
  "use strict";

  /* Range seconds -> bucket seconds: 60-170 points per chart, each a multiple of a
   * minute or an hour on the epoch grid, so counts and means come from the rollups
   * (events_1m up to a day, events_1h beyond). */
  A.RANGES = {
    3600: { bucket: 60, label: "1 h" },
    86400: { bucket: 900, label: "24 h" },
    604800: { bucket: 3600, label: "7 d" },
    2592000: { bucket: 21600, label: "30 d" },
  };
  /* For a custom range: the finest of these that gives at most 200 buckets. */
  A.CUSTOM_BUCKETS = [60, 300, 900, 3600, 10800, 21600, 86400, 604800];
  A.TOP_N = 10;

  /* Fixed colours per status class, the same in light and dark. */
  A.CLASS_COLOURS = {
    "1xx": "#8c8c8c",
    "2xx": "#2f9e44",
    "3xx": "#1c7ed6",
    "4xx": "#f08c00",
    "5xx": "#e03131",
  };
  A.CLASSES = ["2xx", "3xx", "4xx", "5xx", "1xx"];
  A.PCT_COLOURS = { p50: "#1c7ed6", p95: "#f08c00", p99: "#e03131" };
  A.classOf = (code) => `${String(code)[0]}xx`;

  A.$ = (id) => document.getElementById(id);
  A.el = (tag, props, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "class") e.className = v;
      else if (v !== undefined && v !== null) e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };

  /* A group's name as shown: calls sent without a consumer or function form "". */
  A.groupLabel = (name) => (name === "" ? "(none)" : name);

  const nf = new Intl.NumberFormat();
  A.fmtCount = (n) => (n === null || n === undefined ? "—" : nf.format(n));
  /* Microseconds as milliseconds, three significant digits at least. */
  A.fmtMs = (us) => {
    if (us === undefined) return "…";
    if (us === null || Number.isNaN(us)) return "—";
    const ms = us / 1000;
    if (ms >= 100) return `${nf.format(Math.round(ms))} ms`;
    if (ms >= 10) return `${ms.toFixed(1)} ms`;
    return `${ms.toFixed(2)} ms`;
  };
  A.fmtPct = (share) => {
    if (share === null || share === undefined || Number.isNaN(share)) return "—";
    const p = share * 100;
    if (p === 0) return "0 %";
    return `${p < 1 ? p.toFixed(2) : p.toFixed(1)} %`;
  };
  A.fmtTime = (s, bucket) => {
    const d = new Date(s * 1000);
    if (bucket >= 86400) return d.toLocaleDateString([], { month: "short", day: "numeric", year: "numeric" });
    return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  };
  A.fmtAgo = (s, now) => {
    const d = Math.max(0, now - s);
    if (d < 120) return "just now";
    if (d < 7200) return `${Math.round(d / 60)} min ago`;
    if (d < 2 * 86400) return `${Math.round(d / 3600)} h ago`;
    return `${Math.round(d / 86400)} d ago`;
  };
  A.fmtDuration = (s) => {
    if (s % 86400 === 0) return `${s / 86400} d`;
    if (s % 3600 === 0) return `${s / 3600} h`;
    return `${Math.round(s / 60)} min`;
  };
})(window.Apx = window.Apx || {});
