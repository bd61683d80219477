/* The panels: headline cards, the three time charts and the three tables, drawn from
 * what load.js computed; clicking a name drills down. */
(function (A) {
  "use strict";
  const $ = A.$;

  const CHARTS = ["c-requests", "c-latency", "c-errors"];
  const TABLES = ["t-endpoints", "t-consumers", "t-status"];
  const CARDS = {
    requests: { label: "Requests", fmt: A.fmtCount, worse: 0 },
    errorRate: { label: "Error rate (5xx)", fmt: A.fmtPct, worse: 1, points: true },
    p50: { label: "p50 latency", fmt: A.fmtMs, worse: 1, approx: true },
    p95: { label: "p95 latency", fmt: A.fmtMs, worse: 1, approx: true },
    p99: { label: "p99 latency", fmt: A.fmtMs, worse: 1, approx: true },
    consumers: { label: "Active consumers", fmt: A.fmtCount, worse: 0, absolute: true },
  };

  A.clearPanels = function clearPanels() {
    for (const id of CHARTS) A.clearChart(id);
    for (const id of TABLES) A.clearTable(id);
    for (const k of Object.keys(CARDS)) {
      const card = $(`h-${k}`);
      card.querySelector(".value").textContent = "";
      card.querySelector(".delta").textContent = "";
      delete card.dataset.value;
      delete card.dataset.prev;
    }
    for (const n of document.querySelectorAll(".note")) n.textContent = "";
  };

  function drawCards(v) {
    const h = v.headline;
    for (const [k, c] of Object.entries(CARDS)) {
      const card = $(`h-${k}`);
      const { value, prev } = h[k];
      card.querySelector(".value").textContent = value === undefined ? "…"
        : `${c.approx && v.approx && value !== null ? "≈ " : ""}${c.fmt(value)}`;
      card.dataset.value = value === undefined || value === null ? "" : String(value);
      card.dataset.prev = prev === null || prev === undefined ? "" : String(prev);
      const d = card.querySelector(".delta");
      d.className = "delta";
      if (value === undefined) {
        d.textContent = "computing…";
        continue;
      }
      if (value === null || prev === null || prev === undefined) {
        d.textContent = "no previous data";
        continue;
      }
      let text, diff;
      if (c.points) { diff = (value - prev) * 100; text = `${diff >= 0 ? "+" : "−"}${Math.abs(diff).toFixed(2)} pts`; }
      else if (c.absolute) { diff = value - prev; text = `${diff >= 0 ? "+" : "−"}${Math.abs(diff)}`; }
      else if (prev === 0) { diff = value; text = value ? "new" : "±0 %"; }
      else { diff = (value - prev) / prev * 100; text = `${diff >= 0 ? "+" : "−"}${Math.abs(diff).toFixed(1)} %`; }
      d.textContent = `${text} vs the ${v.label} before`;
      if (c.worse && Math.abs(diff) >= 0.005) d.classList.add(diff > 0 ? "bad" : "good");
    }
  }

  /* Every panel from a computed view (load.js); `addFilter(field, value)` drills down. */
  A.drawPanels = function drawPanels(v, addFilter) {
    const t0 = performance.now();
    const p = v.p;
    const base = { xs: v.xs, start: p.start, end: p.end, bucket: p.bucket };
    A.drawChart("c-requests", { ...base, stacked: true, yFmt: (n) => A.fmtCount(n),
      series: A.CLASSES.filter((c) => c !== "1xx" || v.classes["1xx"].some((x) => x))
        .map((c) => ({ label: c, colour: A.CLASS_COLOURS[c], values: v.classes[c] })) });
    const lat = v.latency;
    if (lat.every((s) => s)) {
      A.drawChart("c-latency", { ...base, yFmt: (us) => A.fmtMs(us), axisFmt: (us) => `${A.fmtCount(Math.round(us / 1000))} ms`,
        series: ["p50", "p95", "p99"].map((k, i) => ({ label: k, colour: A.PCT_COLOURS[k], values: lat[i] })) });
    } else {
      A.clearChart("c-latency");
    }
    $("c-latency").classList.toggle("pending", v.pending);
    A.drawChart("c-errors", { ...base, yFmt: (s) => A.fmtPct(s), axisFmt: (s) => `${+(s * 100).toFixed(1)} %`,
      series: [{ label: "5xx share", colour: A.CLASS_COLOURS["5xx"], values: v.errorRate }] });

    const pick = (field) => (row) => addFilter(field, row.id);
    A.drawTable("t-endpoints", {
      columns: [
        { key: "name", label: "Endpoint", name: true },
        { key: "method", label: "Method", name: true, noPick: true },
        { key: "calls", label: "Calls", fmt: A.fmtCount },
        { key: "errorRate", label: "Errors", fmt: A.fmtPct },
        { key: "p50", label: "p50", fmt: A.fmtMs },
        { key: "p95", label: "p95", fmt: A.fmtMs },
        { key: "mean", label: "Mean", fmt: A.fmtMs },
      ],
      rows: v.endpoints,
      sort: { key: "calls", dir: "desc" },
      onPick: pick("function"),
      other: (rest) => {
        const calls = rest.reduce((a, r) => a + r.cells.calls, 0);
        const errs = rest.reduce((a, r) => a + (r.cells.errorRate || 0) * r.cells.calls, 0);
        const total = rest.reduce((a, r) => a + (r.cells.mean || 0) * r.cells.calls, 0);
        return { name: `other (${rest.length})`, method: "", calls, errorRate: calls ? errs / calls : null, p50: null, p95: null, mean: calls ? total / calls : null };
      },
    });
    A.drawTable("t-consumers", {
      columns: [
        { key: "name", label: "Consumer", name: true },
        { key: "calls", label: "Calls", fmt: A.fmtCount },
        { key: "errorRate", label: "Errors", fmt: A.fmtPct },
        { key: "p95", label: "p95", fmt: A.fmtMs },
        { key: "lastSeen", label: "Last seen", fmt: (s) => (s === null ? "—" : A.fmtAgo(s, Math.min(v.now, p.end))) },
      ],
      rows: v.consumers,
      sort: { key: "calls", dir: "desc" },
      onPick: pick("consumer_id"),
      other: (rest) => {
        const calls = rest.reduce((a, r) => a + r.cells.calls, 0);
        const errs = rest.reduce((a, r) => a + (r.cells.errorRate || 0) * r.cells.calls, 0);
        return { name: `other (${rest.length})`, calls, errorRate: calls ? errs / calls : null, p95: null,
          lastSeen: Math.max(...rest.map((r) => r.cells.lastSeen ?? 0)) };
      },
    });
    A.drawTable("t-status", {
      columns: [
        { key: "code", label: "Status", name: true },
        { key: "cls", label: "Class", name: true },
        { key: "calls", label: "Calls", fmt: A.fmtCount },
        { key: "share", label: "Share", fmt: A.fmtPct },
      ],
      rows: v.statuses,
      sort: { key: "calls", dir: "desc" },
      onPick: (row, col) => addFilter("status_code", col === "cls" ? row.cells.cls : row.id),
      other: (rest) => {
        const calls = rest.reduce((a, r) => a + r.cells.calls, 0);
        return { code: `other (${rest.length})`, cls: "", calls, share: v.requests ? calls / v.requests : null };
      },
    });
    for (const s of document.querySelectorAll("#t-status td[data-col='cls'] button")) {
      const sw = A.el("span", { class: "swatch" });
      sw.style.background = A.CLASS_COLOURS[s.textContent] || "transparent";
      s.prepend(sw);
    }

    // Panels that need raw events say why they are empty past retention.
    const gone = (k) => v.failed[k] && v.failed[k].status === 410;
    $("c-latency").querySelector(".note").textContent = ["p50t", "p95t", "p99t"].some(gone)
      ? "Percentiles need raw events, which are past retention for this range."
      : v.pending ? "Computing percentiles over every call of the range…"
        : v.approx ? `Approximate percentiles (within ${+(v.approx.relative_error * 100).toFixed(2)} %).` : "";
    $("range-note").textContent = Object.keys(v.failed).some(gone)
      ? "Part of this range is past the raw events' retention: percentiles cannot be shown for it." : "";
    drawCards(v);
    A.stats.drawMs = performance.now() - t0;
  };

})(window.Apx = window.Apx || {});
