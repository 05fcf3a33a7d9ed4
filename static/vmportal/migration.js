/* Migration pages, without any framework (needs live.js loaded first).
 *
 * [data-poll-partial]: the wizard's candidate list and preflight grid. While the region
 *   contains [data-pending], re-fetch the partial every 1.5 s and swap it in.
 * [data-migration-socket]: the migration page. Draws the transfer chart (uPlot, vendored) from
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
    step: "#b42318",
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
  // The transfer chart (uPlot, vendored): sent and dirtied MiB/s on the left axis, MiB left to
  // send filled on the right one, a dashed line where a new pass over memory began and a solid
  // one where the adaptive policy acted. Each sample is also a row of the table behind the chart.
  function mibOrNull(v) { return v === null || v === undefined ? null : v / MIB; }
  function leftOf(s) {
    return mibOrNull(s.data_remaining !== null && s.data_remaining !== undefined ? s.data_remaining : s.mem_remaining);
  }

  function chartData(samples) {
    return [
      samples.map(function (s) { return s.t || 0; }),
      samples.map(function (s) { return mibOrNull(s.bps); }),
      samples.map(function (s) { return mibOrNull(s.dirty_bps); }),
      samples.map(leftOf),
    ];
  }

  // Where each new pass over memory began: [{t, iteration}].
  function passesOf(samples) {
    var out = [], last = null;
    samples.forEach(function (s) {
      if (s.iteration === null || s.iteration === undefined) return;
      if (last !== null && s.iteration !== last) out.push({ t: s.t, iteration: s.iteration });
      last = s.iteration;
    });
    return out;
  }

  // Where the adaptive policy acted: [{t, step}].
  function stepsOf(samples) {
    return samples.filter(function (s) { return s.step; }).map(function (s) { return { t: s.t, step: s.step }; });
  }

  function markersPlugin(getPasses, getSteps) {
    return {
      hooks: {
        draw: [function (u) {
          var ctx = u.ctx, dpr = window.devicePixelRatio || 1;
          ctx.save();
          ctx.strokeStyle = COLORS.pass;
          ctx.fillStyle = COLORS.text;
          ctx.lineWidth = dpr;
          ctx.setLineDash([3 * dpr, 3 * dpr]);
          ctx.font = Math.round(11 * dpr) + "px system-ui, sans-serif";
          ctx.textBaseline = "top";
          getPasses().forEach(function (p) {
            var x = Math.round(u.valToPos(p.t, "x", true));
            ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
            ctx.fillText("pass " + p.iteration, x + 3 * dpr, u.bbox.top + 2 * dpr);
          });
          // What the adaptive policy did, where it did it: a solid line and its name.
          ctx.setLineDash([]);
          ctx.strokeStyle = COLORS.step;
          ctx.fillStyle = COLORS.step;
          ctx.lineWidth = 2 * dpr;
          ctx.textBaseline = "bottom";
          getSteps().forEach(function (p) {
            var x = Math.round(u.valToPos(p.t, "x", true));
            ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
            ctx.fillText(p.step, x + 3 * dpr, u.bbox.top + u.bbox.height - 2 * dpr);
          });
          ctx.restore();
        }],
      },
    };
  }

  function fixed(v, digits) { return v === null || v === undefined ? "—" : v.toFixed(digits); }

  function fillTable(body, samples) {
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    samples.forEach(function (s) {
      var tr = document.createElement("tr");
      [fixed(s.t, 2), fixed(mibOrNull(s.bps), 1), fixed(mibOrNull(s.dirty_bps), 1), fixed(leftOf(s), 1),
       s.iteration === null || s.iteration === undefined ? "—" : String(s.iteration), s.step || ""].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function TransferChart(box, table) {
    this.box = box;
    this.table = table;
    this.samples = [];
    this.plot = null;
  }

  TransferChart.prototype.options = function () {
    var self = this;
    var few = function () { return self.samples.length <= 12; };  // mark each point of a short migration
    // Whole numbers unless the ticks are closer than one apart (then one decimal: "0.5 s").
    function unit(suffix) {
      return function (u, values) {
        var step = values.length > 1 ? Math.abs(values[1] - values[0]) : 1;
        var digits = step > 0 && step < 1 ? 1 : 0;
        return values.map(function (v) { return v === null ? "" : v.toFixed(digits) + suffix; });
      };
    }
    return {
      width: Math.max(this.box.clientWidth, 320),
      height: 260,
      scales: { x: { time: false, range: function (u, min, max) { return [0, Math.max(max, 5)]; } },
                rate: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } },
                left: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      axes: [
        { values: unit(" s"), stroke: COLORS.text, grid: { stroke: COLORS.grid } },
        { scale: "rate", label: "MiB/s", values: unit(""), stroke: COLORS.text, grid: { stroke: COLORS.grid } },
        { scale: "left", label: "MiB left", side: 1, values: unit(""), stroke: COLORS.text, grid: { show: false } },
      ],
      series: [
        { label: "Elapsed", value: function (u, v) { return v === null ? "—" : v.toFixed(1) + " s"; } },
        { label: "Sent", scale: "rate", stroke: COLORS.rate, width: 2, points: { show: few },
          value: function (u, v) { return v === null ? "—" : v.toFixed(1) + " MiB/s"; } },
        { label: "Dirtied", scale: "rate", stroke: COLORS.dirty, width: 2, points: { show: few },
          value: function (u, v) { return v === null ? "—" : v.toFixed(1) + " MiB/s"; } },
        { label: "Left", scale: "left", stroke: COLORS.remainingLine, fill: COLORS.remaining, width: 1,
          points: { show: few }, value: function (u, v) { return v === null ? "—" : v.toFixed(1) + " MiB"; } },
      ],
      plugins: [markersPlugin(function () { return passesOf(self.samples); },
                              function () { return stepsOf(self.samples); })],
    };
  };

  TransferChart.prototype.draw = function (samples) {
    this.samples = samples;
    fillTable(this.table, samples);
    if (!samples.length || typeof uPlot === "undefined") return;
    if (this.plot) {
      this.plot.setData(chartData(samples));
    } else {
      this.plot = new uPlot(this.options(), chartData(samples), this.box);
    }
  };

  TransferChart.prototype.resize = function () {
    if (this.plot) this.plot.setSize({ width: Math.max(this.box.clientWidth, 320), height: 260 });
  };

  // ------------------------------------------------------------------ migration page
  function bindMigration(root) {
    var box = document.getElementById("migration-chart");
    var chart = box ? new TransferChart(box, document.querySelector("#migration-samples-table tbody")) : null;
    var empty = document.getElementById("chart-empty");
    var dataNode = document.getElementById(root.dataset.samples);
    var samples = [];
    try { samples = JSON.parse(dataNode ? dataNode.textContent : "[]") || []; } catch (e) { samples = []; }
    var status = root.dataset.status;
    var phase = root.dataset.phase;
    var followUp = root.dataset.followUp || "";
    var redrawTimer = null;

    function redraw() {
      if (!chart || box.closest("[hidden]")) return;
      if (empty) empty.hidden = samples.length > 0;
      chart.draw(samples);
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
      if (s.forecast) setField("forecast", s.forecast);
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
    window.addEventListener("resize", function () { if (chart) chart.resize(); });
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
