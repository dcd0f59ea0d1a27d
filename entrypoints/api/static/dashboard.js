// The VEC ops dashboard's light JavaScript: live progress by polling the dashboard's
// progress.json every second, and a history filter that applies on change. No build step;
// the pages work without it (forms post, pages reload).
(function () {
  "use strict";
  var body = document.body;
  var prefix = body.getAttribute("data-prefix") || "/dashboard";
  var page = body.getAttribute("data-page");
  var POLL_MS = 1000;

  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var cancelForm = document.getElementById("cancel-form");
  if (cancelForm) {
    cancelForm.addEventListener("submit", function () {
      var button = document.getElementById("cancel");
      if (button) { button.disabled = true; button.textContent = "Cancelling…"; }
    });
  }

  function badge(text, cls) {
    var span = document.createElement("span");
    span.className = "badge " + cls;
    span.textContent = text;
    return span;
  }

  function setText(row, field, value) {
    row.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) { el.textContent = String(value); });
  }

  function update(row, task) {
    row.querySelectorAll('progress[data-field="progress"]').forEach(function (bar) {
      bar.value = task.percent;
      bar.textContent = task.percent + "%";
    });
    setText(row, "percent", task.percent + "%");
    ["settled", "verified", "consumed", "unknown", "refunded", "failed", "late", "debited"].forEach(function (f) {
      setText(row, f, task[f]);
    });
    row.querySelectorAll('[data-field="badges"]').forEach(function (holder) {
      holder.replaceChildren(badge(task.status, "s-" + task.status));
      if (task.partial_failure) { holder.append(" ", badge("Partial failure", "s-partial")); }
    });
    var was = row.getAttribute("data-active") === "true";
    row.setAttribute("data-active", task.active ? "true" : "false");
    return was && !task.active;
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-task]")); }

  function poll() {
    var current = rows();
    var active = current.filter(function (r) { return r.getAttribute("data-active") === "true"; });
    // the task page stops once its task ended; the overview keeps watching for new tasks
    if (!active.length && page !== "overview") { return; }
    var ids = {};
    active.forEach(function (r) { ids[r.getAttribute("data-task")] = true; });
    var query = Object.keys(ids).map(function (id) { return "task=" + encodeURIComponent(id); }).join("&");
    fetch(prefix + "/progress.json" + (query ? "?" + query : ""), {credentials: "same-origin", cache: "no-store"})
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (!data) { return; }
        var finished = false;
        current.forEach(function (row) {
          var task = data.tasks[row.getAttribute("data-task")];
          if (task && update(row, task)) { finished = true; }
        });
        var shown = {};
        current.forEach(function (r) { shown[r.getAttribute("data-task")] = true; });
        var unseen = (data.in_flight || []).some(function (id) { return !shown[id]; });
        var count = document.getElementById("in-flight-count");
        if (count) { count.textContent = String((data.in_flight || []).length); }
        // a task ended (its results, refunds and history rows are final) or a new one started:
        // the server renders the page again
        if ((finished && page === "task") || (unseen && page === "overview")) { window.location.reload(); return; }
        if (finished && page === "overview") { window.location.reload(); return; }
      })
      .catch(function () { /* a missed poll: the next one catches up */ })
      .finally(function () { window.setTimeout(poll, POLL_MS); });
  }

  if (rows().length || page === "overview") { window.setTimeout(poll, POLL_MS); }
})();
