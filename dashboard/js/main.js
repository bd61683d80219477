/* The page: settings, state in the URL, loads, drill-down chips, and the states
 * (loading, empty app, wrong key, service down, past retention). */
(function (A) {
  "use strict";
  const $ = A.$;

  let state = A.readState();
  let key = "";
  let controller = null;
  let timer = null;
  let last = null; // the view on screen

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

  function draw(v) {
    last = v;
    A.drawPanels(v, addFilter);
  }

  function clearAll() {
    A.clearPanels();
    last = null;
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
    const empty = v.requests === 0 && !state.filters.length && await A.appIsEmpty(cfg, Math.ceil(now / 60) * 60, signal).catch(() => false);
    if (signal.aborted) return;
    A.remember(state, key);
    $("board").removeAttribute("aria-busy");
    $("empty").hidden = !empty;
    $("board").hidden = empty;
    if (empty) {
      clearAll();
      A.showSnippet(cfg.app, cfg.base);
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
