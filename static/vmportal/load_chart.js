// Host load charts (uPlot, vendored): every .load-history section fetches its host's JSON and
// draws memory used % and CPU %; the range buttons reload it; the table under it shows the numbers.
// The host's migrations in the range (the migration history JSON, filtered by host) are marked
// on the time axis as dashed lines and listed under the chart, each a link to its page.
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

  function getJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); });
  }

  // The migrations of the host between from and to: [{t, id, label, href}], oldest first.
  function marksIn(history, from, to) {
    var out = [];
    if (!history || !history.t) return out;
    for (var i = 0; i < history.t.length; i++) {
      if (history.t[i] < from || history.t[i] > to) continue;
      out.push({ t: history.t[i], id: history.id[i], label: history.label[i],
                 href: history.url.replace("{id}", String(history.id[i])) });
    }
    return out;
  }

  function listMarks(section, marks) {
    var box = section.querySelector(".load-marks");
    var list = section.querySelector(".load-marks-list");
    if (!box || !list) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    box.hidden = marks.length === 0;
    marks.forEach(function (m, i) {
      if (i) list.appendChild(document.createTextNode(", "));
      var a = document.createElement("a");
      a.href = m.href;
      a.textContent = m.label;
      a.title = fmtTime(m.t) + " UTC";
      list.appendChild(a);
    });
  }

  // A uPlot plugin: one dashed vertical line per migration, drawn under the series.
  function marksPlugin(marks) {
    return {
      hooks: {
        drawAxes: [function (u) {
          var ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#8e44ad";
          ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
          ctx.setLineDash([4 * (window.devicePixelRatio || 1), 3 * (window.devicePixelRatio || 1)]);
          marks.forEach(function (m) {
            var x = Math.round(u.valToPos(m.t, "x", true));
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          });
          ctx.restore();
        }],
      },
    };
  }

  function draw(section, range) {
    var box = section.querySelector(".load-chart");
    var url = box.getAttribute("data-url") + "?range=" + encodeURIComponent(range);
    var marksUrl = box.getAttribute("data-marks-url");
    // The history is asked for whole days: a week for the week, one day for the rest.
    var history = marksUrl
      ? getJson(marksUrl + "&days=" + (range === "week" ? 7 : 1)).catch(function () { return null; })
      : Promise.resolve(null);
    Promise.all([getJson(url), history])
      .then(function (both) {
        var data = both[0];
        var marks = marksIn(both[1], data.from, data.to);
        listMarks(section, marks);
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
          plugins: [marksPlugin(marks)],
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
