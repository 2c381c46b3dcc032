// offload ui: live job states over server-sent events, toasts and notifications.
// No framework and no build step: the pages are server-rendered; this only patches them.
"use strict";
(function () {
  const seen = {};  // job key -> last state, to notice when one finishes
  const told = {};  // server job ids already announced as finished
  const ended = (state) => state === "done" || state === "failed";

  function toast(text) {
    const box = document.getElementById("toasts");
    const el = document.createElement("div");
    el.className = "toast";
    el.setAttribute("role", "status");
    el.textContent = text;
    box.appendChild(el);
    setTimeout(() => el.remove(), 8000);
    if ("Notification" in window && Notification.permission === "granted") {
      try { new Notification("offload", { body: text }); } catch (e) { /* not in this context */ }
    }
  }

  function patch(row) {
    document.querySelectorAll('[data-job="' + row.key + '"]').forEach((el) => {
      const state = el.querySelector(".state");
      if (state) { state.textContent = row.state; state.className = "state state-" + row.state; }
      const bar = el.querySelector("progress");
      if (bar && row.total) { bar.max = row.total; bar.value = row.done; }
      const count = el.querySelector(".count");
      if (count) { count.textContent = row.total ? row.done + " / " + row.total : row.checkpoints + " checkpoints"; }
      const id = el.querySelector(".server-id");
      if (id && row.id !== null) { id.textContent = row.id; }
      el.querySelectorAll("[data-when]").forEach((b) => {
        b.hidden = !b.dataset.when.split(" ").includes(row.state);
      });
      const err = el.querySelector(".job-error");
      if (err && row.error) { err.textContent = row.error; }
    });
  }

  function announce(id, fn, state) {
    if (id !== null && told[id]) { return; }
    if (id !== null) { told[id] = true; }
    toast("Job " + id + " (" + fn.split(":").pop() + ") " +
          (state === "done" ? "is complete" : "failed"));
  }

  function update(rows) {
    rows.forEach((row) => {
      const before = seen[row.key];
      seen[row.key] = row.state;
      patch(row);
      if (before !== undefined && before !== row.state && ended(row.state)) {
        announce(row.id !== null ? row.id : row.key, row.function, row.state);
      }
    });
  }

  // A server's list (the Jobs page): states patched in place, finished jobs announced.
  function updateServer(rows) {
    rows.forEach((row) => {
      const key = "s" + row.id;
      const before = seen[key];
      seen[key] = row.state;
      const cell = document.querySelector('#jobs tr[data-id="' + row.id + '"] .state');
      if (cell && !cell.textContent.includes("(")) {  // "resumed (job 9)" says more: keep it
        cell.textContent = row.state;
        cell.className = "state state-" + row.state;
      }
      if (before !== undefined && before !== row.state && ended(row.state)) {
        announce(row.id, row.function, row.state);
      }
    });
  }

  function listen() {
    if (!window.EventSource) { return; }
    const table = document.getElementById("jobs");
    const server = table ? table.dataset.server : "";
    const source = new EventSource("/events" + (server ? "?server=" + encodeURIComponent(server) : ""));
    source.onmessage = (event) => {
      const data = JSON.parse(event.data);
      update(data.started);
      updateServer(data.server || []);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const ask = document.getElementById("notify");
    if (ask && "Notification" in window && Notification.permission === "default") {
      ask.hidden = false;
      ask.addEventListener("click", () => Notification.requestPermission().then(() => { ask.hidden = true; }));
    }
    listen();
  });
})();

// New job: a chosen .npy file goes in the form as base64 (urlencoded; no multipart parser needed).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("new-job");
  const file = document.getElementById("file");
  if (!form || !file) { return; }
  form.addEventListener("submit", (event) => {
    const upload = document.getElementById("upload");
    if (!file.files.length || upload.value || event.submitter.id !== "submit-button") { return; }
    event.preventDefault();
    const reader = new FileReader();
    reader.onload = () => {
      upload.value = reader.result.split(",", 2)[1];  // a data: URL's base64 part
      form.requestSubmit(event.submitter);
    };
    reader.readAsDataURL(file.files[0]);
  });
});
