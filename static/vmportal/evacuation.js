/* The evacuation page, without any framework (needs live.js loaded first).
 *
 * [data-evacuation-socket]: follows /ws/evacuations/<id>/. A change of the evacuation
 *   (evacuation.state/status) re-fetches the [data-evacuation-part] region (server-rendered,
 *   already escaped); a migration.progress sample of one of its items moves that row's bar
 *   (progress[data-migration]). The wall time ticks while the evacuation runs.
 */
(function () {
  "use strict";

  function secs(s) {
    if (s < 60) return s.toFixed(1) + " s";
    var m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  }

  function bindEvacuation(root) {
    var url = root.dataset.evacuationPart;
    var pcts = {};  // migration id -> last % of memory sent, re-applied after a refresh
    var timer = null;
    var shownAt = Date.now();

    function applyBars() {
      Object.keys(pcts).forEach(function (id) {
        var bar = root.querySelector('progress[data-migration="' + id + '"]');
        var text = root.querySelector('[data-migration-pct="' + id + '"]');
        if (bar && Number(bar.value) < pcts[id]) bar.value = pcts[id];
        if (text && bar) text.textContent = Math.round(Number(bar.value)) + "%";
      });
    }

    function refresh() {
      window.fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 404 || response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (!html) return;
          root.innerHTML = html;
          shownAt = Date.now();
          applyBars();
        })
        .catch(function () { /* the next event or reconnect catches up */ });
    }

    function scheduleRefresh() {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 150);
    }

    function tick() {
      var wall = root.querySelector("#evacuation-wall[data-ticking]");
      if (wall) wall.textContent = secs(Number(wall.dataset.wallS) + (Date.now() - shownAt) / 1000);
    }
    window.setInterval(tick, 1000);

    window.VMPortalLive.connect(root.dataset.evacuationSocket, function (message) {
      if (message.type === "evacuation.state" || message.type === "evacuation.status" ||
          message.type === "migration.status") {
        scheduleRefresh();
      } else if (message.type === "migration.progress" && message.migration) {
        var pct = message.sample && message.sample.pct;
        if (pct === null || pct === undefined) return;
        pcts[message.migration] = Math.max(pcts[message.migration] || 0, pct);
        applyBars();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-evacuation-socket]").forEach(bindEvacuation);
  });
})();
