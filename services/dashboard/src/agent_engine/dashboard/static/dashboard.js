// Agent Engine dashboard: the task page's live graph. Plain JavaScript, no library: it listens to the task's
// server-sent events (/tasks/<id>/live) and sets each graph node's data-status, which the CSS colours; the
// timeline, calls, artifacts and events below it are drawn again by the server and swapped in.
"use strict";
(function () {
  const holder = document.querySelector(".graph[data-task]");
  if (!holder || !window.EventSource) return;
  const task = holder.dataset.task;
  const badge = document.getElementById("task-status");
  const forms = document.querySelector("#approvals .forms");
  let waitingNow = null;  // the nodes waiting for approval, as the feed last said
  let fetching = false;
  const feed = new EventSource("/tasks/" + encodeURIComponent(task) + "/live");
  feed.onmessage = function (message) {
    const state = JSON.parse(message.data);
    for (const [node, status] of Object.entries(state.nodes)) {
      const box = holder.querySelector('.node[data-node="' + CSS.escape(node) + '"]');
      if (box && box.dataset.status !== status) {
        box.dataset.status = status;
        const label = box.querySelector(".st");
        if (label) label.textContent = status;
      }
    }
    if (badge) { badge.textContent = state.status; badge.className = "status s-" + state.status; }
    waitingNow = state.waiting.join(",");
    syncApprovals();
    refreshDetails();
  };
  // The page below the graph, as the server draws it now: on every change, and every 5 s while the feed is
  // open (the cost ledger may catch up after the last change); one fetch at a time.
  const details = document.getElementById("details");
  let drawing = false, again = false;
  function refreshDetails() {
    if (!details) return;
    if (drawing) { again = true; return; }
    drawing = true;
    fetch(window.location.pathname, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        const fresh = html && new DOMParser().parseFromString(html, "text/html").getElementById("details");
        if (fresh) details.innerHTML = fresh.innerHTML;
      })
      .catch(function () {})
      .finally(function () { drawing = false; if (again) { again = false; refreshDetails(); } });
  }
  const ticking = window.setInterval(function () {
    if (document.body.dataset.live === "open") refreshDetails();
  }, 5000);
  // A node came to wait for approval (or stopped waiting): the server draws the forms and we swap them in,
  // until what is shown was drawn for the nodes the feed says wait (an answer may come from a moment before).
  function shownFor() {
    const drawn = forms && forms.firstElementChild;
    return drawn ? drawn.dataset.waiting : null;
  }
  function syncApprovals() {
    if (!forms || fetching || waitingNow === null || shownFor() === waitingNow) return;
    fetching = true;
    fetch("/tasks/" + encodeURIComponent(task) + "/approvals", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        fetching = false;
        if (html === null) return;
        forms.innerHTML = html;
        if (shownFor() !== waitingNow) window.setTimeout(syncApprovals, 500);
      })
      .catch(function () { fetching = false; window.setTimeout(syncApprovals, 2000); });
  }
  feed.addEventListener("end", function () {
    feed.close(); document.body.dataset.live = "ended"; window.clearInterval(ticking); refreshDetails();
  });
  feed.onopen = function () { document.body.dataset.live = "open"; };
})();
