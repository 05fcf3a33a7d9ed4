// Migration history charts (uPlot, vendored) on the migrations list: one point per migration (total
// time, libvirt's downtime, the guest's own gap), migrations per day and a histogram of downtimes,
// from history.json with the filter's host/guest/days; a click on a point opens that migration.
(function () {
  "use strict";

  function fmtTime(t) { return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " "); }
  function shown(v) { return v === null || v === undefined ? "—" : String(v); }

  function clear(box) {
    if (box._chart) { box._chart.destroy(); box._chart = null; }
  }

  function width(box) { return Math.max(box.clientWidth, 280); }

  function fromZero(u, lo, hi) { return [0, Math.max(hi || 0, 1) * 1.1]; }

  function pointsChart(box, data) {
    var dots = function () { return null; };  // points only: each migration stands alone
    var opts = {
      width: width(box), height: 240,
      // A little room after "now", so the newest migration's point is drawn whole and can be hovered.
      scales: { x: { time: true, range: function () { return [data.from, data.to + (data.to - data.from) * 0.02]; } },
                s: { range: fromZero }, ms: { range: fromZero } },
      axes: [{}, { scale: "s", label: "total s" }, { scale: "ms", side: 1, label: "downtime ms", grid: { show: false } }],
      cursor: { points: { size: 10 } },
      series: [
        { value: function (u, v) { return v == null ? "—" : fmtTime(v); } },
        { label: "Total (s)", scale: "s", stroke: "#2f6fbf", paths: dots, points: { show: true, size: 7, fill: "#2f6fbf" } },
        { label: "Downtime (ms)", scale: "ms", stroke: "#c0392b", paths: dots, points: { show: true, size: 7, fill: "#c0392b" } },
        { label: "Guest saw (ms)", scale: "ms", stroke: "#8e44ad", paths: dots, points: { show: true, size: 6, fill: "#fff" } },
      ],
    };
    box._chart = new uPlot(opts, [data.t, data.total_s, data.downtime_ms, data.guest_ms], box);
    var u = box._chart;
    u.over.classList.add("clickable");
    u.over.addEventListener("click", function (e) {
      // The hovered point, else the one nearest the click (a click with no mouse move before it).
      var i = u.cursor.idx;
      if (i === null || i === undefined) i = u.posToIdx(e.clientX - u.over.getBoundingClientRect().left);
      if (i !== null && i !== undefined && data.id[i] !== undefined) {
        window.location.href = data.url.replace("{id}", String(data.id[i]));
      }
    });
    u.over.setAttribute("title", "Click a point to open its migration");
  }

  // span: [from, to] of a time axis (the range asked for), or null for an axis of buckets.
  function barsChart(box, xs, ys, label, span, xLabels) {
    var time = span !== null;
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 60] }) : undefined;
    var opts = {
      width: width(box), height: 180, legend: { show: true },
      // Half a step of room on each side, so the first and last bars are drawn whole.
      scales: { x: { time: time, distr: time ? 1 : 2, range: function (u, lo, hi) { return time ? [span[0] - 43200, span[1] + 43200] : [lo - 0.5, hi + 0.5]; } }, y: { range: function (u, lo, hi) { return [0, Math.max(hi, 1) * 1.1]; } } },
      axes: [time ? {} : { values: function (u, vals) { return vals.map(function (v) { return xLabels[v] || ""; }); } }, {}],
      series: [
        time ? { value: function (u, v) { return v == null ? "—" : fmtTime(v).slice(0, 10); } }
             : { label: "Downtime", value: function (u, v) { return v == null ? "—" : xLabels[v]; } },
        { label: label, stroke: "#2f6fbf", fill: "rgba(47,111,191,0.35)", paths: bars, points: { show: false } },
      ],
    };
    box._chart = new uPlot(opts, [xs, ys], box);
  }

  function fillTable(section, data) {
    var body = section.querySelector(".history-table tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    for (var i = data.t.length - 1; i >= 0 && i >= data.t.length - 500; i--) {
      var tr = document.createElement("tr");
      var cells = [fmtTime(data.t[i]), null, shown(data.total_s[i]), shown(data.downtime_ms[i]), shown(data.guest_ms[i])];
      cells.forEach(function (v, k) {
        var td = document.createElement("td");
        if (k >= 2) td.className = "num";
        if (k === 1) {
          var a = document.createElement("a");
          a.href = data.url.replace("{id}", String(data.id[i]));
          a.textContent = data.label[i];
          td.appendChild(a);
        } else td.textContent = v;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }

  function load(section) {
    var form = section.querySelector(".history-filter");
    var params = new URLSearchParams(new FormData(form));
    fetch(section.getAttribute("data-url") + "?" + params.toString(), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    })
      .then(function (r) { return r.ok ? r.json() : r.json().then(function (e) { return Promise.reject(e.error); }); })
      .then(function (data) {
        var boxes = section.querySelectorAll(".history-chart");
        boxes.forEach(clear);
        section.querySelector(".history-empty").hidden = data.t.length > 0;
        fillTable(section, data);
        if (!data.t.length || typeof uPlot === "undefined") return;
        pointsChart(section.querySelector('[data-chart="points"]'), data);
        barsChart(section.querySelector('[data-chart="per-day"]'), data.per_day.t, data.per_day.count, "Migrations",
                  [data.from, data.to]);
        var h = data.histogram;
        barsChart(section.querySelector('[data-chart="histogram"]'), h.labels.map(function (_, i) { return i; }),
                  h.count, "Migrations", null, h.labels);
      })
      .catch(function (why) {
        var empty = section.querySelector(".history-empty");
        empty.hidden = false;
        empty.textContent = typeof why === "string" ? why : "The history could not be loaded.";
      });
  }

  function init() {
    document.querySelectorAll(".migration-history[data-url]").forEach(function (section) {
      section.querySelector(".history-filter").addEventListener("submit", function (e) { e.preventDefault(); load(section); });
      load(section);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
