// Sparklines (uPlot, vendored): every .sparkline[data-host] on the page gets its host's last day of
// memory and CPU use; one request per page (ids in chunks), the latest figures as text beside the line.
(function () {
  "use strict";
  var script = document.currentScript || document.getElementById("sparkline-script");
  var URL_BASE = script && script.getAttribute("data-url");
  var CHUNK = 200;

  function last(values) {
    for (var i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  function pct(v) { return v === null ? "—" : Math.round(v) + " %"; }

  function draw(box, series, range) {
    var text = box.querySelector(".sparkline-text");
    var mem = last(series.memory_pct), cpu = last(series.cpu_pct);
    if (text) text.textContent = series.t.length ? "mem " + pct(mem) + " · cpu " + pct(cpu) : "no load yet";
    box.setAttribute("title", series.name + ": memory " + pct(mem) + ", CPU " + pct(cpu) + " (last day)");
    if (!series.t.length || typeof uPlot === "undefined") return;
    var holder = document.createElement("span");
    holder.className = "sparkline-plot";
    box.insertBefore(holder, text);
    new uPlot({
      width: 120, height: 28, legend: { show: false }, cursor: { show: false }, select: { show: false },
      axes: [{ show: false }, { show: false }],
      scales: { x: { time: true, range: function () { return range; } }, y: { range: [0, 100] } },
      series: [{}, { stroke: "#2f6fbf", width: 1.5 }, { stroke: "#c0392b", width: 1, spanGaps: false }],
    }, [series.t, series.memory_pct, series.cpu_pct], holder);
  }

  function load(boxes) {
    var ids = boxes.map(function (b) { return b.getAttribute("data-host"); });
    return fetch(URL_BASE + "?ids=" + encodeURIComponent(ids.join(",")), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        boxes.forEach(function (box) {
          var series = data.hosts[box.getAttribute("data-host")];
          if (series) draw(box, series, [data.from, data.to]);
          else { var t = box.querySelector(".sparkline-text"); if (t) t.textContent = ""; }
        });
      })
      .catch(function () {
        boxes.forEach(function (box) { var t = box.querySelector(".sparkline-text"); if (t) t.textContent = "—"; });
      });
  }

  function init() {
    if (!URL_BASE) return;
    var boxes = Array.prototype.slice.call(document.querySelectorAll(".sparkline[data-host]:not([data-drawn])"));
    boxes.forEach(function (b) { b.setAttribute("data-drawn", "1"); });
    for (var i = 0; i < boxes.length; i += CHUNK) load(boxes.slice(i, i + CHUNK));
  }

  function start() {
    init();
    // Lists that swap their rows in (live updates, other pages of a list) get theirs drawn too.
    var pending = null;
    new MutationObserver(function () {
      if (pending) return;
      pending = window.setTimeout(function () { pending = null; init(); }, 100);
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
