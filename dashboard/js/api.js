/* The query API and the page's state in the URL (never the key). */
(function (A) {
  "use strict";

  A.stats = { requests: 0 };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status; // 0: the service did not answer
      this.code = code;
    }
  }
  A.ApiError = ApiError;

  /* One GET /1/timeseries/ call. `params` values may be arrays (repeated parameters). */
  A.query = async function query(cfg, start, end, params, signal) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      for (const item of [].concat(v)) if (item !== undefined) qs.append(k, item);
    }
    const headers = { "X-Auth-User": cfg.app };
    if (cfg.key) headers["X-Auth-Key"] = cfg.key;
    const url = `${cfg.base.replace(/\/$/, "")}/1/timeseries/${start}/${end}/?${qs}`;
    A.stats.requests += 1;
    let resp;
    try {
      // The session cookie only goes to the service that served this page.
      resp = await fetch(url, { headers, credentials: "same-origin", signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "unreachable", `The service at ${cfg.base} does not answer.`);
    }
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const e = body.error || {};
      const error = new ApiError(resp.status, e.code || "", e.message || `HTTP ${resp.status}`);
      error.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
      throw error;
    }
    return body;
  };

  /* Filters as the API's include values (status filters are sent as the codes of
   * them a period has: load.js). */
  A.includeParams = (filters) => filters.map((f) => `${f.field}:${f.value}`);

  A.FILTER_FIELDS = { function: "endpoint", consumer_id: "consumer", status_code: "status", method: "method" };

  A.defaultBase = () => (location.protocol.startsWith("http") ? location.origin : "http://127.0.0.1:8080");

  /* State <-> URL: app, range, from/to (custom), f=field:value (repeatable), refresh,
   * live, and base when it is not this page's own service. */
  A.readState = () => {
    const p = new URLSearchParams(location.search);
    const filters = p.getAll("f").map((s) => {
      const i = s.indexOf(":");
      return i > 0 ? { field: s.slice(0, i), value: s.slice(i + 1) } : null;
    }).filter((f) => f && f.field in A.FILTER_FIELDS);
    const range = p.get("range") || localStorage.getItem("apinalytics.range") || "86400";
    return {
      base: p.get("base") || localStorage.getItem("apinalytics.base") || A.defaultBase(),
      app: p.get("app") || localStorage.getItem("apinalytics.app") || "",
      range: range === "custom" || range in A.RANGES ? range : "86400",
      from: Number(p.get("from")) || 0,
      to: Number(p.get("to")) || 0,
      filters,
      refresh: ["30", "60"].includes(p.get("refresh")) ? p.get("refresh") : "0",
      live: p.get("live") === "1",
    };
  };

  A.writeState = (state, push) => {
    const p = new URLSearchParams();
    if (state.base && state.base !== A.defaultBase()) p.set("base", state.base);
    if (state.app) p.set("app", state.app);
    p.set("range", state.range);
    if (state.range === "custom") { p.set("from", state.from); p.set("to", state.to); }
    for (const f of state.filters) p.append("f", `${f.field}:${f.value}`);
    if (state.refresh !== "0") p.set("refresh", state.refresh);
    if (state.live) p.set("live", "1");
    const url = `${location.pathname}?${p}`;
    if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
  };

  /* Settings remembered by this browser once a load succeeded. */
  A.remember = (state, key) => {
    localStorage.setItem("apinalytics.base", state.base);
    localStorage.setItem("apinalytics.app", state.app);
    localStorage.setItem("apinalytics.range", state.range);
    if (key) localStorage.setItem("apinalytics.key", key);
  };
  A.forgetKey = () => localStorage.removeItem("apinalytics.key");
  A.storedKey = () => localStorage.getItem("apinalytics.key") || "";
})(window.Apx = window.Apx || {});
