/* Migration pages, without any framework (needs live.js loaded first).
 *
 * [data-poll-partial]: the wizard's candidate list and preflight grid. While the region
 *   contains [data-pending], re-fetch the partial every 1.5 s and swap it in.
 * [data-migration-socket]: the migration page. Draws the transfer chart on a <canvas> from
 *   the samples embedded in the page (json_script), appends live samples from the socket,
 *   updates the progress figures, and re-fetches the page's [data-migration-part] regions
 *   when the status, the phase or the follow-up (figures recorded after a success) changes.
 */
(function () {
  "use strict";

  var MIB = 1024 * 1024;
  var COLORS = {
    rate: "#2f6fed",
    dirty: "#e07b00",
    remaining: "rgba(102, 112, 133, 0.18)",
    remainingLine: "#98a2b3",
    pass: "#b9c3d6",
    grid: "#e2e6ee",
    text: "#667085"
  };

  // ------------------------------------------------------------------ polling
  function bindPoll(region) {
    var url = region.dataset.pollPartial;
    function tick() {
      if (!region.querySelector("[data-pending]")) return;
      window.fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 404 || response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html) region.innerHTML = html; })
        .catch(function () { /* offline: try again next tick */ })
        .then(function () { window.setTimeout(tick, 1500); });
    }
    window.setTimeout(tick, 1500);
  }

  // ------------------------------------------------------------------ formatting
  function mib(bytes) { return bytes === null || bytes === undefined ? "—" : (bytes / MIB).toFixed(1) + " MiB"; }
  function rate(bps) { return bps === null || bps === undefined ? "—" : (bps / MIB).toFixed(1) + " MiB/s"; }
  function secs(s) {
    if (s === null || s === undefined) return "—";
    if (s < 60) return s.toFixed(1) + " s";
    var m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  }

  // ------------------------------------------------------------------ chart
  function niceMax(value) {
    if (!(value > 0)) return 1;
    var exp = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (value <= steps[i] * exp) return steps[i] * exp;
    }
    return 10 * exp;
  }

  function tick(value) {
    if (value >= 10) return value.toFixed(0);
    return String(parseFloat(value.toFixed(value >= 1 ? 1 : 2)));
  }

  function drawChart(canvas, samples) {
    var dpr = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 600;
    var height = 260;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var pad = { left: 62, right: 70, top: 14, bottom: 30 };
    var plotW = width - pad.left - pad.right;
    var plotH = height - pad.top - pad.bottom;
    if (plotW < 50 || !samples.length) return;

    var tMax = 5, rateMax = 0, leftMax = 0;
    samples.forEach(function (s) {
      tMax = Math.max(tMax, s.t || 0);
      rateMax = Math.max(rateMax, s.bps || 0, s.dirty_bps || 0);
      leftMax = Math.max(leftMax, s.data_remaining !== null && s.data_remaining !== undefined ? s.data_remaining : (s.mem_remaining || 0));
    });
    rateMax = niceMax(rateMax / MIB);
    leftMax = niceMax(leftMax / MIB);
    tMax = niceMax(tMax);
    function x(t) { return pad.left + (t / tMax) * plotW; }
    function yRate(v) { return pad.top + plotH - (v / rateMax) * plotH; }
    function yLeft(v) { return pad.top + plotH - (v / leftMax) * plotH; }

    // Grid and axes
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var gy = pad.top + (plotH * i) / 4;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(pad.left, gy); ctx.lineTo(pad.left + plotW, gy); ctx.stroke();
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      ctx.fillText(tick(rateMax * (4 - i) / 4), pad.left - 6, gy);
      ctx.textAlign = "left";
      ctx.fillText(tick(leftMax * (4 - i) / 4), pad.left + plotW + 6, gy);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (var k = 0; k <= 5; k++) {
      var tx = (tMax * k) / 5;
      ctx.fillText(tick(tx) + " s", x(tx), pad.top + plotH + 8);
    }
    ctx.save();
    ctx.translate(14, pad.top + plotH / 2); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText("MiB/s", 0, 0);
    ctx.restore();
    ctx.save();
    ctx.translate(width - 12, pad.top + plotH / 2); ctx.rotate(Math.PI / 2);
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText("MiB left", 0, 0);
    ctx.restore();

    // New passes over memory
    var lastPass = null;
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = COLORS.pass;
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "left"; ctx.textBaseline = "top";
    samples.forEach(function (s) {
      if (s.iteration === null || s.iteration === undefined) return;
      if (lastPass !== null && s.iteration !== lastPass) {
        ctx.beginPath(); ctx.moveTo(x(s.t), pad.top); ctx.lineTo(x(s.t), pad.top + plotH); ctx.stroke();
        ctx.fillText("pass " + s.iteration, x(s.t) + 3, pad.top + 2);
      }
      lastPass = s.iteration;
    });
    ctx.setLineDash([]);

    // Data left: filled area on the right axis
    function leftOf(s) {
      var v = s.data_remaining !== null && s.data_remaining !== undefined ? s.data_remaining : s.mem_remaining;
      return v === null || v === undefined ? null : v / MIB;
    }
    ctx.beginPath();
    var started = false, firstX = null, lastX = null;
    samples.forEach(function (s) {
      var v = leftOf(s);
      if (v === null) return;
      if (!started) { ctx.moveTo(x(s.t), yLeft(0)); firstX = x(s.t); started = true; }
      ctx.lineTo(x(s.t), yLeft(v));
      lastX = x(s.t);
    });
    if (started) {
      ctx.lineTo(lastX, yLeft(0)); ctx.lineTo(firstX, yLeft(0)); ctx.closePath();
      ctx.fillStyle = COLORS.remaining; ctx.fill();
    }
    line(samples, function (s) { return leftOf(s); }, yLeft, COLORS.remainingLine, 1);
    line(samples, function (s) { return s.dirty_bps === null || s.dirty_bps === undefined ? null : s.dirty_bps / MIB; }, yRate, COLORS.dirty, 2);
    line(samples, function (s) { return s.bps === null || s.bps === undefined ? null : s.bps / MIB; }, yRate, COLORS.rate, 2);

    function line(points, value, y, color, widthPx) {
      ctx.beginPath();
      var moved = false;
      points.forEach(function (s) {
        var v = value(s);
        if (v === null) { moved = false; return; }
        if (!moved) { ctx.moveTo(x(s.t), y(v)); moved = true; } else { ctx.lineTo(x(s.t), y(v)); }
      });
      ctx.strokeStyle = color; ctx.lineWidth = widthPx; ctx.stroke();
      // A short migration has only a few samples: mark each one so they stay visible.
      if (points.length <= 12) {
        ctx.fillStyle = color;
        points.forEach(function (s) {
          var v = value(s);
          if (v === null) return;
          ctx.beginPath(); ctx.arc(x(s.t), y(v), widthPx + 1.5, 0, 2 * Math.PI); ctx.fill();
        });
      }
    }
  }

  // ------------------------------------------------------------------ migration page
  function bindMigration(root) {
    var canvas = document.getElementById("migration-chart");
    var empty = document.getElementById("chart-empty");
    var dataNode = document.getElementById(root.dataset.samples);
    var samples = [];
    try { samples = JSON.parse(dataNode ? dataNode.textContent : "[]") || []; } catch (e) { samples = []; }
    var status = root.dataset.status;
    var phase = root.dataset.phase;
    var followUp = root.dataset.followUp || "";
    var redrawTimer = null;

    function redraw() {
      if (!canvas || canvas.closest("[hidden]")) return;
      if (empty) empty.hidden = samples.length > 0;
      drawChart(canvas, samples);
    }
    function scheduleRedraw() {
      if (redrawTimer) return;
      redrawTimer = window.setTimeout(function () { redrawTimer = null; redraw(); }, 100);
    }

    function setField(name, text) {
      root.querySelectorAll('[data-live-field="' + name + '"]').forEach(function (node) {
        node.textContent = text;
        node.hidden = false;
      });
    }
    function showSample(s) {
      if (!s) return;
      var bar = root.querySelector("[data-live-progress]");
      if (bar && s.pct !== null && s.pct !== undefined) bar.value = s.pct;
      setField("pct", s.pct === null || s.pct === undefined ? "—" : s.pct.toFixed(1) + "%");
      if (s.iteration) {
        setField("iteration", String(s.iteration));
        root.querySelectorAll("[data-live-pass]").forEach(function (node) { node.hidden = false; });
      }
      setField("remaining", mib(s.data_remaining));
      setField("bps", rate(s.bps));
      setField("dirty", rate(s.dirty_bps));
      setField("eta", secs(s.eta_s));
      setField("elapsed", secs(s.t));
      var warning = document.getElementById("convergence-warning");
      if (warning && s.warning) { warning.hidden = false; setField("warning", s.warning); }
    }

    function refreshParts() {
      root.querySelectorAll("[data-migration-part]").forEach(function (region) {
        window.fetch(region.dataset.migrationPart, { credentials: "same-origin" })
          .then(function (response) {
            if (response.status === 404 || response.redirected) { window.location.reload(); return null; }
            return response.ok ? response.text() : null;
          })
          .then(function (html) {
            if (!html) return;
            region.innerHTML = html;
            showSample(samples[samples.length - 1]);
          })
          .catch(function () { /* the next event or reconnect catches up */ });
      });
    }

    function onState(migration) {
      var changed = migration.status !== status || migration.phase !== phase ||
        (migration.follow_up || "") !== followUp;
      status = migration.status;
      phase = migration.phase;
      followUp = migration.follow_up || "";
      root.dataset.status = status;
      if (changed) refreshParts();
    }

    redraw();
    window.addEventListener("resize", scheduleRedraw);
    window.VMPortalLive.connect(root.dataset.migrationSocket, function (message) {
      if (message.type === "migration.state") {
        samples = message.samples || [];
        scheduleRedraw();
        showSample(samples[samples.length - 1]);
        onState(message.migration);
      } else if (message.type === "migration.progress") {
        samples.push(message.sample);
        scheduleRedraw();
        showSample(message.sample);
      } else if (message.type === "migration.status") {
        onState(message.migration);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-partial]").forEach(bindPoll);
    document.querySelectorAll("[data-migration-socket]").forEach(bindMigration);
  });
})();
