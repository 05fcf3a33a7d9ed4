/* Live updates over websockets, without any framework.
 *
 * [data-live-socket][data-live-partial]: on an event from the socket that concerns what the
 *   region shows, patch what the event says at once (a guest's state badge
 *   [data-live-vm-state=<id>], a host's status badge [data-live-host-status=<id>]), then
 *   re-fetch the partial URL (the rows on screen, server-rendered, already escaped) and swap it
 *   in, at most once per 250 ms (the summaries and actions follow from the new states). Rows
 *   fetched while newer events came in may have been rendered before them: they take those
 *   events' patches again once swapped in, and one more fetch follows.
 *   [data-live-host-id] limits this to events about that host; a list says which hosts its rows
 *   show with [data-live-shown-hosts]. A hidden page (a background tab) does not fetch: it
 *   fetches once when it is shown again.
 * [data-job-socket]: a job page (or widget) that shows status, progress and log lines as they
 *   arrive; [data-reload-on-finish] reloads the page once the job ends.
 * Sockets reconnect with backoff; on (re)connect the server sends the current state, and a
 *   region that receives it re-fetches what it shows (it may have missed events meanwhile).
 *
 * Inventory events (coalesced on the server, core/live_events.py): {"type": "inventory.changed",
 *   "host_ids": [...], "hosts_changed": bool, "everything": bool,
 *   "hosts": {"<id>": {"status", "label"}}, "guests": {"<id>": {"host_id", "state", "label"}}}.
 */
(function () {
  "use strict";

  var indicator = document.getElementById("live-indicator");
  var openSockets = 0;

  function setIndicator() {
    if (!indicator) return;
    indicator.dataset.state = openSockets > 0 ? "live" : "offline";
    indicator.title = openSockets > 0 ? "Live updates on" : "Live updates reconnecting…";
  }

  function connect(path, onMessage) {
    var delay = 1000;
    function open() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + window.location.host + path);
      var counted = false;
      ws.onopen = function () { delay = 1000; counted = true; openSockets += 1; setIndicator(); };
      ws.onmessage = function (event) {
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        onMessage(data);
      };
      ws.onclose = function (event) {
        if (counted) { openSockets -= 1; }
        setIndicator();
        // 4401 not logged in, 4403 role missing, 4404 gone: retrying will not help.
        if (event.code === 4401 || event.code === 4403 || event.code === 4404) return;
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open();
  }

  // Does this inventory event concern what the region shows? A host or guest page names its
  // host (data-live-host-id); a list names the hosts of the rows it shows, inside the partial
  // so each refresh renews it ([data-live-shown-hosts]); any other region takes every event.
  function concerns(region, message) {
    if (message.type !== "inventory.changed") return true;  // a state on (re)connect, or another socket's event
    if (message.everything) return true;
    var named = (message.host_ids || []).map(String);
    var hostId = region.dataset.liveHostId;
    if (hostId) return named.indexOf(hostId) !== -1;
    var marker = region.querySelector("[data-live-shown-hosts]");
    if (!marker) return true;
    if (message.hosts_changed) return true;
    var shown = "," + marker.dataset.liveShownHosts + ",";
    return named.some(function (id) { return shown.indexOf("," + id + ",") !== -1; });
  }

  // A state or status is a short lower-case word: anything else is not made into a class name.
  var WORD = /^[a-z_]{1,32}$/;

  function patchBadges(region, selector, prefix, changes) {
    Object.keys(changes || {}).forEach(function (id) {
      var change = changes[id];
      var value = change && (change.state || change.status);
      if (!/^[0-9]{1,20}$/.test(id) || !value || !WORD.test(value)) return;
      region.querySelectorAll("[" + selector + '="' + id + '"]').forEach(function (badge) {
        badge.className = "badge " + prefix + value;
        badge.textContent = change.label || value;  // text, never markup
      });
    });
  }

  // The rows on screen take what the event says at once, before their re-fetch.
  function patch(region, message) {
    if (message.type !== "inventory.changed") return;
    patchBadges(region, "data-live-vm-state", "state-", message.guests);
    patchBadges(region, "data-live-host-status", "status-", message.hosts);
  }

  function bindPartialRegion(region) {
    // At most one fetch per QUIET_MS and never two at once, however fast events come: a burst
    // of events is one refresh of the rows on screen, and the last event is never dropped.
    var QUIET_MS = 250;
    var timer = null;
    var inFlight = false;
    var again = false;
    var stale = false;  // an event came while the page was hidden: fetch when it is shown
    // The events that came while a fetch was under way: its rows may have been rendered before
    // them, so once swapped in they take these patches again (a badge never goes back to an
    // older state), and one more fetch follows.
    var sinceFetch = [];
    function refresh() {
      timer = null;
      if (document.hidden) { stale = true; return; }
      if (inFlight) { again = true; return; }
      inFlight = true;
      sinceFetch = [];
      window.fetch(region.dataset.livePartial, { credentials: "same-origin" })
        .then(function (response) {
          // Gone, or logged out (redirected to the login page): let the full page show why.
          if (response.status === 404 || response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null || html === undefined) return;
          region.innerHTML = html;
          sinceFetch.forEach(function (message) { patch(region, message); });
        })
        .catch(function () { /* offline: the next event or reconnect catches up */ })
        .then(function () {
          inFlight = false;
          sinceFetch = [];
          if (again) { again = false; schedule(); }
        });
    }
    function schedule() {
      if (timer === null) timer = window.setTimeout(refresh, QUIET_MS);
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && stale) { stale = false; schedule(); }
    });
    connect(region.dataset.liveSocket, function (message) {
      // The state a socket starts with (and after a reconnect): events may have been missed
      // between the render and the connect, so the region asks for what it shows now.
      if (!concerns(region, message)) return;
      patch(region, message);
      if (inFlight) { sinceFetch.push(message); again = true; }
      schedule();
    });
  }

  function logLine(entry) {
    var li = document.createElement("li");
    li.className = "log-" + (entry.level || "info");
    var time = document.createElement("time");
    time.textContent = (entry.t || "").slice(11, 19);
    var text = document.createElement("span");
    text.textContent = entry.msg || "";
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(text);
    return li;
  }

  function formatTime(iso) {
    return iso ? iso.slice(0, 19).replace("T", " ") : "—";
  }

  function bindJob(root) {
    var reloadOnFinish = root.hasAttribute("data-reload-on-finish");
    var status = root.querySelector("[data-job-status]");
    var progress = root.querySelector("[data-job-progress]");
    var log = root.querySelector("[data-job-log]");
    var error = root.querySelector("[data-job-error]");
    var started = root.querySelector("[data-job-started]");
    var ended = root.querySelector("[data-job-ended]");

    function showStatus(job) {
      if (status) {
        status.className = "badge job-" + job.status;
        status.textContent = job.status_label;
      }
      if (progress && job.progress !== null && job.progress !== undefined) progress.value = job.progress;
      if (started) started.textContent = formatTime(job.started);
      if (ended) ended.textContent = formatTime(job.ended);
      if (error) {
        error.hidden = !job.error;
        var message = error.querySelector("[data-job-error-message]");
        var hint = error.querySelector("[data-job-error-hint]");
        if (message) message.textContent = job.error || "";
        if (hint) {
          hint.hidden = !job.error_hint;
          hint.querySelector("span").textContent = job.error_hint || "";
        }
      }
      if (job.terminal && reloadOnFinish) window.location.reload();
    }

    function appendLog(entry) {
      if (!log) return;
      var placeholder = log.querySelector(".log-empty");
      if (placeholder) placeholder.remove();
      log.appendChild(logLine(entry));
      log.scrollTop = log.scrollHeight;
    }

    connect(root.dataset.jobSocket, function (message) {
      if (message.type === "job.state") {
        if (log) {
          log.replaceChildren();
          (message.log || []).forEach(appendLog);
        }
        showStatus(message.job);
      } else if (message.type === "job.status") {
        showStatus(message.job);
      } else if (message.type === "job.log") {
        appendLog(message.entry);
      }
    });
  }

  // [data-warnings-socket]: every page's banner of live warnings (text only, newest first).
  function bindWarnings(region) {
    connect(region.dataset.warningsSocket, function (message) {
      if (message.type !== "warning.announced" || !message.warning) return;
      var w = message.warning;
      var li = document.createElement("li");
      li.className = "message message-warning live-warning";
      li.dataset.warningKind = w.kind || "";
      var strong = document.createElement("strong");
      strong.textContent = w.title || "Warning";
      li.appendChild(strong);
      li.appendChild(document.createTextNode(": " + (w.message || "") + " "));
      if (w.url && w.url.charAt(0) === "/") {
        var a = document.createElement("a");
        a.href = w.url;
        a.textContent = "Open";
        li.appendChild(a);
      }
      region.hidden = false;
      region.insertBefore(li, region.firstChild);
      while (region.children.length > 5) region.removeChild(region.lastChild);
    });
  }

  // For page scripts loaded after this one (migration.js): same sockets, same indicator.
  window.VMPortalLive = { connect: connect };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-socket][data-live-partial]").forEach(bindPartialRegion);
    document.querySelectorAll("[data-job-socket]").forEach(bindJob);
    document.querySelectorAll("[data-warnings-socket]").forEach(bindWarnings);
  });
})();
