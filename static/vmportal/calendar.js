/* The maintenance calendar page: FullCalendar (vendored, MIT) over the portal's JSON.
 *
 * Month, week and list views; events coloured by status (the server sends the colours);
 * the host filter refetches; an Operator clicks a day to create a window there and drags or
 * resizes a window that has not started (POST with the CSRF token to the move endpoint, which
 * runs the same service and validation as the form; a refusal reverts the drag and says why).
 */
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("calendar");
    if (!el || !window.FullCalendar) return;
    var hostSelect = document.getElementById("calendar-host");
    var message = document.getElementById("calendar-message");
    var canEdit = el.dataset.canEdit === "1";
    var csrf = el.querySelector("input[name=csrfmiddlewaretoken]");

    function say(text, isError) {
      if (!message) return;
      message.textContent = text;
      message.className = "calendar-message" + (isError ? " error" : "");
    }

    // A FullCalendar date in "UTC" mode is the wall-clock time in the person's zone: sent without offset.
    function wall(date) { return date.toISOString().slice(0, 19); }

    function moved(info) {
      var windowId = info.event.extendedProps.window;
      var url = el.dataset.moveUrl.replace("/0/", "/" + windowId + "/");
      window.fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf ? csrf.value : "" },
        body: JSON.stringify({ start: wall(info.event.start), end: wall(info.event.end) })
      }).then(function (response) {
        return response.json().then(function (data) { return { ok: response.ok && data.ok, data: data }; });
      }).then(function (result) {
        if (result.ok) {
          say("Moved: " + info.event.title, false);
          var cell = document.querySelector('[data-window-when="' + windowId + '"]');
          if (cell && result.data.when) cell.textContent = result.data.when;
          calendar.refetchEvents();
        } else {
          info.revert();
          say((result.data.errors || ["The window could not be moved."]).join(" "), true);
        }
      }).catch(function () {
        info.revert();
        say("The window could not be moved (no answer from the portal).", true);
      });
    }

    var calendar = new window.FullCalendar.Calendar(el, {
      initialView: "dayGridMonth",
      // The server sends wall-clock times in the person's own zone and reads them back the same
      // way: FullCalendar shows them as given (named zones would need a plugin we do not ship).
      timeZone: "UTC",
      now: el.dataset.now || undefined,
      firstDay: 1,
      height: "auto",
      nowIndicator: true,
      headerToolbar: { left: "prev,next today", center: "title", right: "dayGridMonth,timeGridWeek,listMonth" },
      buttonText: { today: "Today", month: "Month", week: "Week", list: "List" },
      eventTimeFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
      slotLabelFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
      // Filled blocks in every view: the colour is the status (a dot alone is too small to tell).
      eventDisplay: "block",
      displayEventEnd: true,
      editable: canEdit,
      eventStartEditable: canEdit,
      eventDurationEditable: canEdit,
      events: function (info, success, failure) {
        var params = new URLSearchParams({ start: wall(info.start), end: wall(info.end) });
        if (hostSelect && hostSelect.value) params.set("host", hostSelect.value);
        window.fetch(el.dataset.eventsUrl + "?" + params.toString(), { credentials: "same-origin" })
          .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
          .then(success)
          .catch(function (e) { say("The calendar could not load its windows.", true); failure(e); });
      },
      eventDidMount: function (info) {
        var p = info.event.extendedProps;
        info.el.title = info.event.title + " — " + p.statusLabel + (p.atRisk ? " (at risk)" : "");
        info.el.dataset.status = p.status;
        info.el.dataset.window = p.window;
      },
      dateClick: function (info) {
        if (!el.dataset.createUrl) return;
        window.location.href = el.dataset.createUrl + "?date=" + encodeURIComponent(info.dateStr.slice(0, 10));
      },
      eventDrop: moved,
      eventResize: moved
    });
    calendar.render();
    if (hostSelect) hostSelect.addEventListener("change", function () { calendar.refetchEvents(); });
    window.VMPortalCalendar = calendar;
  });
})();
