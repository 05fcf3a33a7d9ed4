// Host load charts (uPlot, vendored): every .load-history section fetches its host's JSON and
// draws memory used % and CPU %; the range buttons reload it; the table under it shows the numbers.
(function () {
  "use strict";

  function fmtTime(t) {
    return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
  }

  function fillTable(section, data) {
    var body = section.querySelector(".load-table tbody");
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    for (var i = data.t.length - 1; i >= 0 && i >= data.t.length - 288; i--) {
      var tr = document.createElement("tr");
      [fmtTime(data.t[i]), data.memory_pct[i], data.cpu_pct[i]].forEach(function (v) {
        var td = document.createElement("td");
        td.textContent = v === null || v === undefined ? "—" : String(v);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }

  function draw(section, range) {
    var box = section.querySelector(".load-chart");
    var url = box.getAttribute("data-url") + "?range=" + encodeURIComponent(range);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        if (box._chart) { box._chart.destroy(); box._chart = null; }
        var empty = section.querySelector(".load-empty");
        if (empty) empty.hidden = data.t.length > 0;
        fillTable(section, data);
        if (!data.t.length || typeof uPlot === "undefined") return;
        var opts = {
          width: Math.max(box.clientWidth, 320),
          height: 220,
          // The whole range asked for, so a new host's few points sit at the right end of a day.
          scales: { x: { time: true, range: function () { return [data.from, data.to]; } }, pct: { range: [0, 100] } },
          axes: [{}, { scale: "pct", values: function (u, v) { return v.map(function (x) { return x + " %"; }); } }],
          series: [
            { value: function (u, v) { return v == null ? "—" : fmtTime(v); } },
            { label: "Memory used", scale: "pct", stroke: "#2f6fbf", width: 2,
              value: function (u, v) { return v == null ? "—" : v.toFixed(1) + " %"; } },
            { label: "CPU", scale: "pct", stroke: "#c0392b", width: 2, spanGaps: false,
              value: function (u, v) { return v == null ? "—" : v.toFixed(1) + " %"; } },
          ],
        };
        box._chart = new uPlot(opts, [data.t, data.memory_pct, data.cpu_pct], box);
      })
      .catch(function () {
        var empty = section.querySelector(".load-empty");
        if (empty) { empty.hidden = false; empty.textContent = "The load history could not be loaded."; }
      });
  }

  function init() {
    document.querySelectorAll(".load-history").forEach(function (section) {
      var box = section.querySelector(".load-chart");
      if (!box) return;
      section.querySelectorAll("button[data-range]").forEach(function (b) {
        b.addEventListener("click", function () {
          section.querySelectorAll("button[data-range]").forEach(function (o) { o.setAttribute("aria-pressed", "false"); });
          b.setAttribute("aria-pressed", "true");
          draw(section, b.getAttribute("data-range"));
        });
      });
      draw(section, box.getAttribute("data-range") || "day");
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
