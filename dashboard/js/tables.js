/* Sortable tables: the top N rows by the chosen column, the rest summed into an
 * "other" row. Names are shown whole or cut with an ellipsis and a tooltip. */
(function (A) {
  "use strict";

  const sorts = {}; // table id -> {key, dir}

  /* spec: {columns: [{key, label, fmt, name?}], rows: [{id, cells: {key: value}}],
   *        sort: {key, dir}, other: (rows) => cells | null, onPick: (row) => void,
   *        empty: text} */
  A.drawTable = function drawTable(id, spec) {
    const box = A.$(id);
    const sort = sorts[id] || spec.sort;
    const cmp = (a, b) => {
      const x = a.cells[sort.key], y = b.cells[sort.key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      const r = typeof x === "string" ? x.localeCompare(y) : x - y;
      return sort.dir === "asc" ? r : -r;
    };
    const rows = spec.rows.slice().sort(cmp);
    const top = rows.slice(0, A.TOP_N);
    const rest = rows.slice(A.TOP_N);

    const head = A.el("tr", {}, ...spec.columns.map((c) => {
      const active = c.key === sort.key;
      const btn = A.el("button", { type: "button", class: "sort", title: `Sort by ${c.label}` },
        c.label, active ? (sort.dir === "asc" ? " ▲" : " ▼") : "");
      btn.addEventListener("click", () => {
        const dir = active ? (sort.dir === "asc" ? "desc" : "asc") : (c.name ? "asc" : "desc");
        sorts[id] = { key: c.key, dir };
        A.drawTable(id, spec);
      });
      return A.el("th", { class: c.name ? "name" : "num", dataset: { col: c.key }, ariaSort: active ? (sort.dir === "asc" ? "ascending" : "descending") : "none" }, btn);
    }));

    const line = (row, isOther) => A.el("tr", { class: isOther ? "other" : "", dataset: { key: isOther ? "(other)" : row.id } },
      ...spec.columns.map((c) => {
        const v = row.cells[c.key];
        const text = c.fmt ? c.fmt(v, row) : String(v);
        const td = A.el("td", { class: c.name ? "name" : "num", dataset: { col: c.key } });
        if (v !== null && v !== undefined) td.dataset.value = String(v);
        if (c.name && !isOther && spec.onPick && !c.noPick) {
          const b = A.el("button", { type: "button", class: "pick", title: `${text} — show only this` }, text);
          b.addEventListener("click", () => spec.onPick(row, c.key));
          td.append(b);
        } else {
          td.append(A.el("span", { title: text }, text));
        }
        return td;
      }));

    const body = A.el("tbody", {}, ...top.map((r) => line(r, false)));
    if (rest.length && spec.other) {
      const cells = spec.other(rest);
      if (cells) body.append(line({ id: "(other)", cells }, true));
    }
    if (!rows.length) {
      body.append(A.el("tr", {}, A.el("td", { colSpan: spec.columns.length, class: "none" }, spec.empty || "No calls")));
    }
    box.replaceChildren(A.el("table", {}, A.el("thead", {}, head), body));
    box.dataset.ready = "true";
  };

  A.clearTable = (id) => {
    const box = A.$(id);
    box.replaceChildren();
    delete box.dataset.ready;
  };
})(window.Apx = window.Apx || {});
