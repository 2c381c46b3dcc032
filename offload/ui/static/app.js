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
      const where = el.querySelector(".where");
      if (where && row.where) { where.textContent = row.where; }
      const id = el.querySelector(".server-id");
      if (id && row.id !== null) { id.textContent = row.id; }
      el.querySelectorAll("[data-when]").forEach((b) => {
        b.hidden = !b.dataset.when.split(" ").includes(row.state);
      });
      const pick = el.querySelector("select[name=where]");  // resume: where it ran, until chosen
      if (pick && row.server && !pick.dataset.chosen &&
          Array.from(pick.options).some((o) => o.value === row.server)) { pick.value = row.server; }
      const err = el.querySelector(".job-error");
      if (err && row.error) { err.textContent = row.error; }
      const tb = el.querySelector("details.traceback");
      if (tb && row.traceback) { tb.querySelector("pre").textContent = row.traceback; tb.hidden = false; }
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

  // A server's list (the Jobs page): a row whose state changed is redrawn (its buttons
  // too), a job new since the page came is added on the newest page; finished ones announced.
  function updateServer(rows) {
    const table = document.getElementById("jobs");
    rows.forEach((row) => {
      const key = "s" + row.id;
      const before = seen[key];
      seen[key] = row.state;
      if (table) { place(table, row); }
      if (before !== undefined && before !== row.state && ended(row.state)) {
        announce(row.id, row.function, row.state);
      }
    });
  }

  function place(table, row) {
    const old = table.querySelector('tr[data-id="' + row.id + '"]');
    if (old && old.dataset.state === row.shown) { return; }
    if (!old && !table.dataset.live) { return; }  // an older page: only its own rows
    const body = document.createElement("tbody");
    body.innerHTML = row.html;  // rendered (and escaped) by the app, as the page was
    const fresh = body.firstElementChild;
    if (old) { old.replaceWith(fresh); return; }
    const empty = table.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    const later = Array.from(table.querySelectorAll("tr[data-id]"))
      .find((tr) => parseInt(tr.dataset.id, 10) < row.id);  // newest first
    if (later) { later.before(fresh); } else { table.querySelector("tr").parentNode.appendChild(fresh); }
  }

  function updateOverview(html) {
    const box = document.getElementById("on-servers-box");
    if (box && html !== null && box.innerHTML !== html) { box.innerHTML = html; }
  }

  function listen() {
    if (!window.EventSource) { return; }
    const table = document.getElementById("jobs");
    const query = new URLSearchParams();
    if (table) { query.set("server", table.dataset.server); query.set("state", table.dataset.state); }
    if (document.getElementById("on-servers-box")) { query.set("overview", "1"); }
    const source = new EventSource("/events?" + query.toString());
    source.onmessage = (event) => {
      const data = JSON.parse(event.data);
      update(data.started);
      updateServer(data.server || []);
      updateOverview(data.on_servers);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const ask = document.getElementById("notify");
    if (ask && "Notification" in window && Notification.permission === "default") {
      ask.hidden = false;
      ask.addEventListener("click", () => Notification.requestPermission().then(() => { ask.hidden = true; }));
    }
    document.querySelectorAll("select[name=where]").forEach((where) => {
      where.addEventListener("change", () => { where.dataset.chosen = "1"; });
    });
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

// New job: show the chosen function's fields (only they are sent); typing picks how
// the arguments count, one field each or JSON.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("new-job");
  const pick = document.getElementById("fn");
  if (!form || !pick) { return; }
  const show = () => form.querySelectorAll("fieldset.fields").forEach((set) => {
    const mine = set.dataset.fn === pick.value;
    set.hidden = !mine;
    set.disabled = !mine;
  });
  pick.addEventListener("change", show);
  show();
  const mode = (which) => { document.getElementById("mode-" + which).checked = true; };
  form.addEventListener("input", (event) => {
    if (event.target.closest("fieldset.fields")) { mode("fields"); }
    else if (event.target.id === "args" || event.target.id === "kwargs") { mode("json"); }
  });
  form.dataset.ready = "1";  // listening: typing now picks the mode (tests wait for this)
});
