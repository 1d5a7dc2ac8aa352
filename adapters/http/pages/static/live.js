// The audit pages' live parts: follow the ledger's event stream and redraw a page's live
// region from the server when a lesson in it changes; refresh the operations page while
// a rebuild or a verify runs. Served by the ledger itself: no framework, no other site.
(function () {
  "use strict";

  function announce(text) {
    var announcer = document.getElementById("announcer");
    if (announcer) {
      announcer.textContent = text;
    }
  }

  var refreshing = null;
  var again = false;

  // Fetch the page again and swap its live region in, keeping the keyboard focus.
  function refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        var region = document.getElementById("live-region");
        if (!html || !region) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live-region");
        if (!fresh) {
          return;
        }
        var focused = document.activeElement && document.activeElement.id;
        fresh.removeAttribute("data-live-src"); // the stream already open goes on
        region.replaceWith(fresh);
        if (focused && document.getElementById(focused)) {
          document.getElementById(focused).focus();
        }
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      })
      .catch(function () { /* the next change or tick tries again */ })
      .then(function () {
        refreshing = null;
        if (again) {
          again = false;
          refresh();
        }
      });
    return refreshing;
  }

  function follow(region) {
    var source = new EventSource(region.dataset.liveSrc);
    var first = region.dataset.first;
    var last = region.dataset.last;
    source.addEventListener("lesson", function (message) {
      var lesson = JSON.parse(message.data).lesson;
      if (first && (lesson.lesson_date < first || lesson.lesson_date > last)) {
        return;
      }
      announce("Lesson " + lesson.lesson_date + " " + lesson.time_slot + " is now " + lesson.status + ".");
      refresh();
    });
    source.addEventListener("ready", function () {
      document.body.dataset.live = "following";
    });
  }

  function tick() {
    var region = document.getElementById("live-region");
    if (region && region.dataset.refresh) {
      refresh().then(function () { window.setTimeout(tick, Number(region.dataset.refresh)); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var region = document.getElementById("live-region");
    if (!region) {
      return;
    }
    if (region.dataset.liveSrc && window.EventSource) {
      follow(region);
    }
    if (region.dataset.refresh) {
      window.setTimeout(tick, Number(region.dataset.refresh));
    }
  });
})();
