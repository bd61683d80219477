/* Time charts with uPlot: one shared time axis (the same x range on every chart),
 * a crosshair synchronised across charts, and a tooltip with exact values and time. */
(function (A) {
  "use strict";

  const charts = new Map(); // container id -> uPlot
  A.charts = charts;

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  /* A floating tooltip on the chart under the pointer: the bucket's time and every
   * series' exact value. The other charts show the synchronised crosshair. */
  function tooltipPlugin(spec) {
    let tip;
    let hovered = false;
    return {
      hooks: {
        init: (u) => {
          tip = A.el("div", { class: "tip", hidden: true });
          u.over.appendChild(tip);
          u.over.addEventListener("mouseenter", () => { hovered = true; });
          u.over.addEventListener("mouseleave", () => { hovered = false; tip.hidden = true; });
        },
        setCursor: (u) => {
          const i = u.cursor.idx;
          if (!hovered || i === null || i === undefined || u.cursor.left < 0) { tip.hidden = true; return; }
          const t = spec.xs[i];
          tip.replaceChildren(A.el("div", { class: "tip-time" },
            `${A.fmtTime(t, spec.bucket)} – ${A.fmtTime(t + spec.bucket, spec.bucket)}`));
          for (const s of spec.series) {
            const sw = A.el("span", { class: "swatch" });
            sw.style.background = s.colour;
            tip.append(A.el("div", {}, sw, `${s.label}: `, A.el("b", {}, spec.yFmt(s.values[i]))));
          }
          tip.hidden = false;
          const w = u.over.clientWidth;
          const left = u.cursor.left;
          // Beside the cursor, on the side with more room, never outside the chart.
          const tw = tip.offsetWidth;
          const x = left > w / 2 ? left - tw - 12 : left + 12;
          tip.style.left = `${Math.max(0, Math.min(x, w - tw))}px`;
          tip.style.top = "4px";
        },
      },
    };
  }

  function axisValues(yFmt) {
    return (u, vals) => vals.map((v) => yFmt(v, true));
  }

  /* Draw (or redraw) a chart into the container with id `id`.
   * spec: {xs, start, end, bucket, stacked, series: [{label, colour, values}], yFmt} */
  A.drawChart = function drawChart(id, spec) {
    A.clearChart(id);
    const box = A.$(id);
    const plotBox = box.querySelector(".plot");
    const fg = css("--muted"), grid = css("--grid");
    const width = Math.max(200, plotBox.clientWidth);
    const height = window.innerWidth < 600 ? 170 : 210;
    const n = spec.series.length;
    let data, series;
    if (spec.stacked) {
      // Bars drawn on top of each other, the tallest (all classes) first.
      const cum = [];
      let acc = spec.xs.map(() => 0);
      for (const s of spec.series) {
        acc = acc.map((a, i) => a + (s.values[i] || 0));
        cum.push(acc);
      }
      const bars = uPlot.paths.bars({ size: [0.9, 60, 1], align: 1 });
      data = [spec.xs, ...cum.slice().reverse()];
      series = [{}, ...spec.series.slice().reverse().map((s) => ({
        label: s.label, fill: s.colour, stroke: s.colour, width: 0, paths: bars, points: { show: false },
      }))];
    } else {
      data = [spec.xs, ...spec.series.map((s) => s.values)];
      series = [{}, ...spec.series.map((s) => ({
        label: s.label, stroke: s.colour, width: 1.6, spanGaps: false, points: { show: spec.xs.length < 40, size: 4 },
      }))];
    }
    const opts = {
      width,
      height,
      legend: { show: false },
      cursor: { sync: { key: "apx" }, drag: { x: false, y: false }, points: { show: !spec.stacked } },
      scales: {
        x: { time: true, range: () => [spec.start, spec.end] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] },
      },
      axes: [
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 70, values: axisValues(spec.axisFmt || spec.yFmt) },
      ],
      series,
      plugins: [tooltipPlugin(spec)],
    };
    const u = new uPlot(opts, data, plotBox);
    charts.set(id, u);
    // The legend: every category, always shown (not only those with data).
    const legend = box.querySelector(".legend");
    legend.replaceChildren(...spec.series.map((s) => {
      const sw = A.el("span", { class: "swatch" });
      sw.style.background = s.colour;
      return A.el("span", { class: "legend-item", dataset: { label: s.label } }, sw, s.label);
    }));
    box.dataset.ready = "true";
    box.dataset.series = JSON.stringify(Object.fromEntries(spec.series.map((s) => [s.label, s.values])));
    void n;
  };

  A.clearChart = (id) => {
    const u = charts.get(id);
    if (u) { u.destroy(); charts.delete(id); }
    const box = A.$(id);
    box.querySelector(".plot").replaceChildren();
    box.querySelector(".legend").replaceChildren();
    delete box.dataset.ready;
    delete box.dataset.series;
  };

  A.resizeCharts = () => {
    const h = window.innerWidth < 600 ? 170 : 210;
    for (const [id, u] of charts) {
      const w = A.$(id).querySelector(".plot").clientWidth;
      if (w > 0) u.setSize({ width: w, height: h });
    }
  };
})(window.Apx = window.Apx || {});
