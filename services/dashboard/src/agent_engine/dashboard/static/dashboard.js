// Agent Engine dashboard: the task page's live graph. Plain JavaScript, no library: it listens to the task's
// server-sent events (/tasks/<id>/live) and sets each graph node's data-status, which the CSS colours.
"use strict";
(function () {
  const holder = document.querySelector(".graph[data-task]");
  if (!holder || !window.EventSource) return;
  const task = holder.dataset.task;
  const badge = document.getElementById("task-status");
  let waitingShown = null;
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
    // a node came to wait for approval (or stopped waiting): the server draws the forms, we swap them in
    const waiting = state.waiting.join(",");
    if (waitingShown !== null && waiting !== waitingShown) refreshApprovals();
    waitingShown = waiting;
  };
  function refreshApprovals() {
    fetch("/tasks/" + encodeURIComponent(task) + "/approvals", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        const box = document.querySelector("#approvals .forms");
        if (html !== null && box) box.innerHTML = html;
      });
  }
  feed.addEventListener("end", function () { feed.close(); document.body.dataset.live = "ended"; });
  feed.onopen = function () { document.body.dataset.live = "open"; };
})();
