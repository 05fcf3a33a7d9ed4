/* The audit page's first page: a new event is fetched through the page's own filter
 * (data-audit-partial carries the query string) and put on top only when it matches.
 */
(function () {
  "use strict";

  function latestId(body) {
    var first = body.querySelector("tr[data-event-id]");
    return first ? first.dataset.eventId : "0";
  }

  function bind(body) {
    var timer = null;
    function fetchNew() {
      var url = body.dataset.auditPartial + "&after=" + encodeURIComponent(latestId(body));
      window.fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (!html || !html.trim()) return;
          var template = document.createElement("template");
          template.innerHTML = html;
          var empty = body.querySelector("tr.audit-empty");
          if (empty) empty.remove();
          body.insertBefore(template.content, body.firstChild);
        })
        .catch(function () { /* offline: the next event catches up */ });
    }
    window.VMPortalLive.connect(body.dataset.auditSocket, function (message) {
      if (message.type !== "audit.recorded" && message.type !== "audit.state") return;
      window.clearTimeout(timer);
      timer = window.setTimeout(fetchNew, 250);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.querySelector("tbody[data-audit-socket][data-audit-partial]");
    if (body) bind(body);
  });
})();
