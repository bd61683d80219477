/* One load of the dashboard: the queries for a range (and the previous period of
 * the same length), and what each panel makes of their answers.
 *
 * Requests per load (docs/dashboard.md): 21, plus one per HTTP method the range has
 * (at most 6), plus one when the range is empty (has the app any events at all?).
 * Counts and means come from the rollups; percentiles read raw events. */
(function (A) {
  "use strict";

  /* [start, end) and bucket for a state at time `now` (seconds). */
  A.period = function period(state, now) {
    if (state.range === "custom") {
      const start = Math.floor(state.from / 60) * 60;
      const end = Math.max(start + 60, Math.ceil(state.to / 60) * 60);
      const bucket = A.CUSTOM_BUCKETS.find((b) => (end - start) / b <= 200) || 604800;
      return { start, end, bucket };
    }
    const range = Number(state.range);
    const bucket = A.RANGES[range].bucket;
    // Ends at the next whole minute; starts on a bucket boundary so the first bar
    // covers a whole bucket.
    const end = Math.ceil(now / 60) * 60;
    const start = Math.floor((end - range) / bucket) * bucket;
    return { start, end, bucket };
  };

  const only = (body) => {
    const series = Object.values(body.groups)[0] || [];
    return series.length ? series[0][1] : null;
  };
  const totals = (body) => Object.fromEntries(
    Object.entries(body.groups).map(([k, pairs]) => [k, pairs.reduce((a, [, v]) => a + v, 0)]));
  const sum = (obj) => Object.values(obj).reduce((a, b) => a + b, 0);

  /* At most `n` of the functions given run at once. */
  function limiter(n) {
    let active = 0;
    const queue = [];
    const next = () => {
      if (active >= n || !queue.length) return;
      active += 1;
      const { fn, resolve, reject } = queue.shift();
      fn().then(resolve, reject).finally(() => { active -= 1; next(); });
    };
    return (fn) => new Promise((resolve, reject) => { queue.push({ fn, resolve, reject }); next(); });
  }

  const sleep = (ms, signal) => new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); reject(new DOMException("aborted", "AbortError")); }, { once: true });
  });

  /* Does a status code pass the status filters (exact codes or classes, OR-ed)? */
  const statusMatch = (code, filters) => !filters.length
    || filters.some((f) => (/^[1-5]xx$/.test(f.value) ? code[0] === f.value[0] : code === f.value));

  /* Run every query of a load: an object of answers, each the body or {error}.
   *
   * The service takes at most MAX_INCLUDE_VALUES (100) include values per query and
   * filters status codes by exact value, so a status class is sent as the codes of it
   * the period has, and the error counts as the 5xx codes it has: phase 0 asks for the
   * status codes of both periods (without any status filter), the others follow. */
  A.fetchAll = async function fetchAll(cfg, state, p, signal, onFast) {
    const statusFilters = state.filters.filter((f) => f.field === "status_code");
    const base = A.includeParams(state.filters.filter((f) => f.field !== "status_code"));
    const L = p.end - p.start;
    const prev = [p.start - L, p.start];
    const cur = [p.start, p.end];
    const ask = (range, params) => A.query(cfg, range[0], range[1], params, signal)
      .catch((error) => { if (error.name === "AbortError") throw error; return { error }; });
    const none = Promise.resolve({ groups: {} });
    const g = p.bucket;

    // Phase 0: the status codes of each period.
    const [curAll, prevAll] = await Promise.all([
      ask(cur, { granularity: g, group: "status_code", include: base }),
      ask(prev, { group: "status_code", include: base }),
    ]);
    if (curAll.error || prevAll.error) return { byStatus: curAll, prevStatus: prevAll };
    const only = (body) => ({ ...body, groups: Object.fromEntries(
      Object.entries(body.groups).filter(([c]) => statusMatch(c, statusFilters))) });
    const byStatus = only(curAll), prevStatus = only(prevAll);
    const codes = (body) => Object.keys(body.groups);
    const statusInclude = (present) => {
      if (!statusFilters.length) return base;
      // No code of the filter in the period: one of its codes, which matches nothing.
      const sent = present.length ? present : [statusFilters[0].value.replace(/xx$/, "00")];
      return base.concat(sent.map((c) => `status_code:${c}`));
    };
    const incCur = statusInclude(codes(byStatus)), incPrev = statusInclude(codes(prevStatus));
    const errCur = codes(byStatus).filter((c) => c[0] === "5").map((c) => `status_code:${c}`);
    const q = (range, params) => ask(range, { ...params, include: params.include || (range === prev ? incPrev : incCur) });

    // Phase 1: counts and means, answered by the rollups in milliseconds. The browser
    // sends at most six requests to a host at a time: these must not queue behind the
    // percentiles, which read raw events.
    const fast = {
      consumers: q(cur, { granularity: g, group: "consumer_id" }),
      functions: q(cur, { group: "function" }),
      prevConsumers: q(prev, { group: "consumer_id" }),
      consumerErrors: errCur.length ? q(cur, { group: "consumer_id", include: base.concat(errCur) }) : none,
      functionErrors: errCur.length ? q(cur, { group: "function", include: base.concat(errCur) }) : none,
      functionMean: q(cur, { group: "function", aggregation: "mean" }),
      methods: q(cur, { group: "method" }).then(async (body) => {
        if (body.error) return body;
        const names = Object.keys(body.groups).slice(0, 6);
        const per = await Promise.all(names.map((m) => q(cur, { group: "function", include: incCur.concat([`method:${m}`]) })));
        return { names, per };
      }),
    };
    const settle = async (jobs) => {
      const values = await Promise.all(Object.values(jobs));
      return Object.fromEntries(Object.keys(jobs).map((k, i) => [k, values[i]]));
    };
    const first = { byStatus, prevStatus, ...(await settle(fast)) };
    if (onFast) onFast(first);

    // Phase 2: percentiles. The service runs MAX_RAW_READS (2) raw reads at once per
    // process and answers 503 overloaded to one that waited a second for its turn: two
    // at a time from here, and an overloaded one is asked again after Retry-After.
    // Beyond two days they may come from the rollups' latency histograms (SPEC:
    // precision=approximate, within about 1 %); a service without them ignores the
    // parameter and answers exactly.
    const approx = L > 2 * 86400 ? { precision: "approximate" } : {};
    const turn = limiter(2);
    const raw = (range, params) => turn(async () => {
      for (let attempt = 0; ; attempt += 1) {
        const body = await q(range, { ...params, ...approx });
        if (!(body.error && body.error.code === "overloaded" && attempt < 5)) return body;
        await sleep(1000 * (body.error.retryAfter || 1), signal);
      }
    });
    const slow = {
      p50: raw(cur, { aggregation: "percentile_50" }),
      p95: raw(cur, { aggregation: "percentile_95" }),
      p99: raw(cur, { aggregation: "percentile_99" }),
      p50t: raw(cur, { granularity: g, aggregation: "percentile_50" }),
      p95t: raw(cur, { granularity: g, aggregation: "percentile_95" }),
      p99t: raw(cur, { granularity: g, aggregation: "percentile_99" }),
      functionP95: raw(cur, { group: "function", aggregation: "percentile_95" }),
      functionP50: raw(cur, { group: "function", aggregation: "percentile_50" }),
      consumerP95: raw(cur, { group: "consumer_id", aggregation: "percentile_95" }),
      prevP50: raw(prev, { aggregation: "percentile_50" }),
      prevP95: raw(prev, { aggregation: "percentile_95" }),
      prevP99: raw(prev, { aggregation: "percentile_99" }),
    };
    return { ...first, ...(await settle(slow)) };
  };

  /* The first error that decides the page's state, in order of what it says:
   * wrong key, service down, any other refusal (410 only where it is the sole one). */
  A.decisiveError = (res) => {
    const errors = [];
    for (const v of Object.values(res)) {
      if (v && v.error) errors.push(v.error);
      if (v && v.per) for (const x of v.per) if (x.error) errors.push(x.error);
    }
    return errors.find((e) => e.status === 401 || e.status === 403)
      || errors.find((e) => e.status === 0)
      || errors.find((e) => e.status !== 410)
      || null;
  };

  /* What the panels show, computed from the answers. */
  A.compute = function compute(res, p, now) {
    const ok = (v) => v && !v.error;
    // A percentile: its value, null if refused, undefined while it is being computed.
    const pct = (v) => (v === undefined ? undefined : ok(v) ? only(v) : null);
    const xs = [];
    for (let t = Math.floor(p.start / p.bucket) * p.bucket; t < p.end; t += p.bucket) xs.push(t);
    const at = (pairs) => new Map(pairs.map(([t, v]) => [t, v]));

    // Requests by status class, and the error rate, per bucket.
    const classes = Object.fromEntries(A.CLASSES.map((c) => [c, xs.map(() => 0)]));
    const idx = new Map(xs.map((t, i) => [t, i]));
    const codeTotals = ok(res.byStatus) ? totals(res.byStatus) : {};
    if (ok(res.byStatus)) {
      for (const [code, pairs] of Object.entries(res.byStatus.groups)) {
        const cls = A.classOf(code);
        for (const [t, v] of pairs) if (idx.has(t) && classes[cls]) classes[cls][idx.get(t)] += v;
      }
    }
    const perBucket = xs.map((_, i) => A.CLASSES.reduce((a, c) => a + classes[c][i], 0));
    const errorRate = xs.map((_, i) => (perBucket[i] ? classes["5xx"][i] / perBucket[i] : null));
    const pending = res.p50 === undefined;
    const approx = ["p50", "p95", "p99", "p50t", "p95t", "p99t"].map((k) => ok(res[k]) && res[k].precision).find(Boolean) || null;
    const latency = ["p50t", "p95t", "p99t"].map((k) => {
      if (!ok(res[k])) return null;
      const m = at(Object.values(res[k].groups)[0] || []);
      return xs.map((t) => (m.has(t) ? m.get(t) : null));
    });

    const requests = sum(codeTotals);
    const errors = Object.entries(codeTotals).filter(([c]) => c[0] === "5").reduce((a, [, v]) => a + v, 0);
    const prevCodes = ok(res.prevStatus) ? totals(res.prevStatus) : null;
    const prevRequests = prevCodes ? sum(prevCodes) : null;
    const prevErrors = prevCodes ? Object.entries(prevCodes).filter(([c]) => c[0] === "5").reduce((a, [, v]) => a + v, 0) : null;
    const consumerTotals = ok(res.consumers) ? totals(res.consumers) : {};
    const active = (t) => Object.keys(t).filter((k) => k !== "").length;

    const headline = {
      requests: { value: requests, prev: prevRequests },
      errorRate: { value: requests ? errors / requests : null, prev: prevRequests ? prevErrors / prevRequests : null },
      p50: { value: pct(res.p50), prev: ok(res.prevP50) ? only(res.prevP50) : null },
      p95: { value: pct(res.p95), prev: ok(res.prevP95) ? only(res.prevP95) : null },
      p99: { value: pct(res.p99), prev: ok(res.prevP99) ? only(res.prevP99) : null },
      consumers: { value: active(consumerTotals), prev: ok(res.prevConsumers) ? active(totals(res.prevConsumers)) : null },
    };

    // Endpoints: one row per function, with the methods it was called with.
    const single = (body) => (ok(body) ? Object.fromEntries(Object.entries(body.groups).map(([k, s]) => [k, s.length ? s[0][1] : null])) : {});
    const fnCalls = single(res.functions), fnErr = single(res.functionErrors);
    const fnP50 = single(res.functionP50), fnP95 = single(res.functionP95), fnMean = single(res.functionMean);
    const fnMethods = {};
    if (ok(res.methods)) {
      res.methods.names.forEach((m, i) => {
        for (const [fn, v] of Object.entries(single(res.methods.per[i]))) if (v) (fnMethods[fn] = fnMethods[fn] || []).push(m);
      });
    }
    const endpoints = Object.keys(fnCalls).map((fn) => ({
      id: fn,
      cells: {
        name: A.groupLabel(fn),
        method: (fnMethods[fn] || []).sort().join(", "),
        calls: fnCalls[fn],
        errorRate: fnCalls[fn] ? (fnErr[fn] || 0) / fnCalls[fn] : null,
        p50: pending ? undefined : fnP50[fn] ?? null,
        p95: pending ? undefined : fnP95[fn] ?? null,
        mean: fnMean[fn] ?? null,
      },
    }));

    const cErr = single(res.consumerErrors), cP95 = single(res.consumerP95);
    const consumers = ok(res.consumers) ? Object.entries(res.consumers.groups).map(([c, pairs]) => ({
      id: c,
      cells: {
        name: A.groupLabel(c),
        calls: consumerTotals[c],
        errorRate: consumerTotals[c] ? (cErr[c] || 0) / consumerTotals[c] : null,
        p95: pending ? undefined : cP95[c] ?? null,
        lastSeen: pairs.length ? pairs[pairs.length - 1][0] : null,
      },
    })) : [];

    const statuses = Object.entries(codeTotals).map(([code, n]) => ({
      id: code,
      cells: { code, cls: A.classOf(code), calls: n, share: requests ? n / requests : null },
    }));

    return { pending, approx, xs, classes, errorRate, latency, headline, endpoints, consumers, statuses, requests, now,
      failed: Object.fromEntries(Object.entries(res).map(([k, v]) => [k, v && v.error ? v.error : null])) };
  };
})(window.Apx = window.Apx || {});
