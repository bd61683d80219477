/* The page: settings, state in the URL, loads, drill-down chips, and the states
 * (loading, empty app, wrong key, service down, past retention). */
(function (A) {
  "use strict";
  const $ = A.$;

  let state = A.readState();
  let key = "";
  let controller = null;
  let timer = null;
  let last = null; // the last computed view, redrawn on resize

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

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
  }

  /* ---- settings form ---- */
  function fillForm() {
    $("base").value = state.base;
    $("app").value = state.app;
    $("key").value = key;
    $("range").value = state.range;
    $("refresh").value = state.refresh;
    $("custom").hidden = state.range !== "custom";
    const local = (s) => {
      const d = new Date(s * 1000);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    };
    if (state.range === "custom") {
      $("from").value = local(state.from);
      $("to").value = local(state.to);
    }
    $("live").setAttribute("aria-pressed", String(state.live));
    $("served").hidden = location.protocol.startsWith("http");
  }

  function readForm() {
    state.base = $("base").value.trim() || A.defaultBase();
    state.app = $("app").value.trim();
    key = $("key").value.trim();
    state.range = $("range").value;
    state.refresh = $("refresh").value;
    if (state.range === "custom") {
      const now = Math.floor(Date.now() / 1000);
      state.from = Math.floor(new Date($("from").value).getTime() / 1000) || now - 86400;
      state.to = Math.floor(new Date($("to").value).getTime() / 1000) || now;
      if (state.to <= state.from) state.to = state.from + 3600;
    }
    if (state.range !== "3600") state.live = false;
  }

  /* ---- chips ---- */
  function drawChips() {
    const box = $("filters");
    box.replaceChildren(...state.filters.map((f, i) => {
      const label = `${A.FILTER_FIELDS[f.field]}: ${f.field === "status_code" ? f.value : A.groupLabel(f.value)}`;
      const b = A.el("button", { type: "button", class: "chip", title: `Remove the filter ${label}` }, label, A.el("span", { ariaHidden: "true" }, " ×"));
      b.addEventListener("click", () => {
        state.filters.splice(i, 1);
        go(true);
      });
      return b;
    }));
    box.hidden = !state.filters.length;
  }

  function addFilter(field, value) {
    // One value per field: a second click on the same kind replaces the first.
    state.filters = state.filters.filter((f) => f.field !== field).concat([{ field, value }]);
    go(true);
  }

  /* ---- drawing ---- */
  function clearAll() {
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
    last = null;
  }

  function drawCards(h) {
    for (const [k, c] of Object.entries(CARDS)) {
      const card = $(`h-${k}`);
      const { value, prev } = h[k];
      card.querySelector(".value").textContent = value === undefined ? "…"
        : `${c.approx && last.approx && value !== null ? "≈ " : ""}${c.fmt(value)}`;
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
      d.textContent = `${text} vs the ${last.label} before`;
      if (c.worse && Math.abs(diff) >= 0.005) d.classList.add(diff > 0 ? "bad" : "good");
    }
  }

  function draw(v) {
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
    last = v;
    drawCards(v.headline);
    A.stats.drawMs = performance.now() - t0;
  }

  /* ---- the empty app ---- */
  function snippet(app, base) {
    return [
      "from apinalytics_client import Sender",
      "from apinalytics_client.asgi import ApinalyticsMiddleware",
      "",
      `sender = Sender(${JSON.stringify(app)}, "YOUR_WRITE_KEY", ${JSON.stringify(base.replace(/\/$/, ""))})`,
      "app.add_middleware(ApinalyticsMiddleware, sender=sender)",
    ].join("\n");
  }
  function curl(app, base) {
    return `curl -X POST ${base.replace(/\/$/, "")}/1/events/ \\\n  -H "X-Auth-User: ${app}" -H "X-Auth-Key: YOUR_WRITE_KEY" \\\n` +
      `  -H "Content-Type: application/json" \\\n  -d '[{"timestamp": '$(date +%s)', "method": "GET", "url": "/hello", "function": "hello", "response_us": 1200, "status_code": 200}]'`;
  }

  /* When the range has no calls and no filter: has the app any events at all (within
   * the year the service accepts)? */
  async function appIsEmpty(cfg, end, signal) {
    const all = await A.query(cfg, end - 400 * 86400, end + 3600, {}, signal);
    return Object.values(all.groups).every((pairs) => pairs.every(([, n]) => n === 0));
  }

  const rangeLabel = (p) => (state.range === "custom" ? A.fmtDuration(p.end - p.start) : A.RANGES[state.range].label);

  /* ---- a load ---- */
  async function load() {
    clearTimeout(timer);
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const cfg = { base: state.base, app: state.app, key };
    if (!cfg.app) {
      setStatus("Enter an Application ID (and its read key unless you are logged in).", "");
      document.body.dataset.state = "idle";
      return;
    }
    const now = Date.now() / 1000;
    const p = A.period(state, now);
    A.stats.period = p;
    document.body.dataset.state = "loading";
    if (!last) $("board").setAttribute("aria-busy", "true");
    setStatus("Loading…", "loading");
    const t0 = performance.now();
    A.stats.firstDrawAt = null;
    const view = JSON.stringify([cfg.base, cfg.app, state.range, state.from, state.to, state.filters]);
    const before = A.stats.requests;
    let res;
    try {
      // Counts first: drawn as soon as they are in, percentiles filled in after.
      res = await A.fetchAll(cfg, state, p, signal, (fast) => {
        // Not on an auto-refresh of the view on screen: its percentiles stay until the
        // new ones replace them.
        if (signal.aborted || A.decisiveError(fast) || (last && last.view === view)) return;
        const v = A.compute(fast, p, now);
        if (!v.requests) return;
        Object.assign(v, { p, label: rangeLabel(p), view });
        $("board").removeAttribute("aria-busy");
        $("board").hidden = false;
        $("empty").hidden = true;
        draw(v);
        A.stats.firstDrawAt = performance.now();
      });
    } catch (err) {
      if (err.name === "AbortError") return;
      throw err;
    }
    const error = A.decisiveError(res);
    if (error) return fail(error);
    const v = A.compute(res, p, now);
    v.p = p;
    v.label = rangeLabel(p);
    v.view = view;
    const empty = v.requests === 0 && !state.filters.length && await appIsEmpty(cfg, Math.ceil(now / 60) * 60, signal).catch(() => false);
    if (signal.aborted) return;
    A.remember(state, key);
    $("board").removeAttribute("aria-busy");
    $("empty").hidden = !empty;
    $("board").hidden = empty;
    if (empty) {
      clearAll();
      $("snippet").textContent = snippet(cfg.app, cfg.base);
      $("curl").textContent = curl(cfg.app, cfg.base);
      document.body.dataset.state = "empty";
      setStatus(`No events yet for ${cfg.app}.`, "");
    } else {
      last = v;
      draw(v);
      document.body.dataset.state = "ready";
      const span = `${new Date(p.start * 1000).toLocaleString()} – ${new Date(p.end * 1000).toLocaleString()}`;
      setStatus(`${A.fmtCount(v.requests)} calls, ${span}, per ${A.fmtDuration(p.bucket)}${state.live ? " · live" : ""}.`, "");
    }
    A.stats.lastLoad = { ms: performance.now() - t0, requests: A.stats.requests - before, readyAt: performance.now(), firstDrawAt: A.stats.firstDrawAt };
    schedule();
  }

  function fail(error) {
    clearAll();
    $("board").removeAttribute("aria-busy");
    $("empty").hidden = true;
    let text;
    if (error.status === 401 || error.status === 403) {
      // A wrong key is neither kept nor left in the form.
      A.forgetKey();
      text = key ? `Wrong key: ${error.message}` : `No read key, and not logged in to this service: ${error.message}`;
      key = "";
      $("key").value = "";
      $("board").hidden = true;
      document.body.dataset.state = "unauthorized";
    } else if (error.status === 0) {
      text = `${error.message} Is it running, and is the URL right?`;
      document.body.dataset.state = "down";
      $("board").hidden = true;
    } else if (error.status === 503) {
      text = `The service cannot answer just now: ${error.message}`;
      document.body.dataset.state = "down";
      $("board").hidden = true;
    } else {
      text = error.message;
      document.body.dataset.state = "error";
      $("board").hidden = true;
    }
    setStatus(text, "error");
    if (error.status === 0 || error.status === 503) schedule(30);
  }

  function schedule(seconds) {
    clearTimeout(timer);
    const every = seconds || (state.live ? 10 : Number(state.refresh));
    if (every) timer = setTimeout(() => load().catch(showCrash), every * 1000);
  }

  function showCrash(err) {
    document.body.dataset.state = "error";
    setStatus(String(err && err.message ? err.message : err), "error");
  }

  function go(push) {
    A.writeState(state, push);
    drawChips();
    load().catch(showCrash);
  }

  /* ---- wiring ---- */
  function init() {
    // A key in an old link is used, not kept in the address bar (writeState below).
    key = new URLSearchParams(location.search).get("key") || A.storedKey();
    fillForm();
    drawChips();
    $("settings").addEventListener("submit", (ev) => {
      ev.preventDefault();
      readForm();
      go(true);
    });
    $("range").addEventListener("change", () => {
      $("custom").hidden = $("range").value !== "custom";
      if ($("range").value === "custom" && !$("from").value) {
        state.from = Math.floor(Date.now() / 1000) - 86400;
        state.to = Math.floor(Date.now() / 1000);
        state.range = "custom";
        fillForm();
        return;
      }
      if ($("range").value !== "custom") $("settings").requestSubmit();
    });
    $("refresh").addEventListener("change", () => $("settings").requestSubmit());
    $("live").addEventListener("click", () => {
      state.live = !state.live;
      if (state.live) state.range = "3600";
      $("range").value = state.range;
      $("live").setAttribute("aria-pressed", String(state.live));
      readForm();
      state.live = $("live").getAttribute("aria-pressed") === "true";
      go(true);
    });
    window.addEventListener("popstate", () => {
      state = A.readState();
      fillForm();
      drawChips();
      load().catch(showCrash);
    });
    let pending = 0;
    window.addEventListener("resize", () => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(A.resizeCharts);
    });
    A.writeState(state, false);
    load().catch(showCrash);
  }

  init();
})(window.Apx = window.Apx || {});
