// The dashboard's behaviour: live fragments (polling), task selection, confirmed actions.
// No framework and no build step: this file is served as is.
"use strict";

const POLL_MS = 1500;
const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function setLiveStatus(text, ok) {
  const el = document.getElementById("live-status");
  if (!el) return;
  el.textContent = text;
  el.dataset.ok = ok ? "1" : "0";
}

async function refresh(el, force) {
  const url = el.dataset.live;
  if (!url) return;
  if (!force && el.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
  let resp;
  try {
    resp = await fetch(url, { headers: { "X-Live-Fingerprint": force ? "" : (el.dataset.fp || "") } });
  } catch (err) {
    setLiveStatus("lost contact with the dashboard server: is `orchestrator ui` still running?", false);
    return;
  }
  if (resp.status === 204) {
    setLiveStatus("live · checked " + new Date().toLocaleTimeString(), true);
    return;
  }
  const html = await resp.text();
  if (url !== el.dataset.live) return;  // the selection changed meanwhile
  replaceKeepingView(el, html);
  el.dataset.fp = resp.headers.get("x-fingerprint") || "";
  setLiveStatus(resp.ok ? "live · updated " + new Date().toLocaleTimeString()
                        : "the server answered " + resp.status + ": see the message on the page", resp.ok);
  markSelected();
}

// Redraw a live element without losing the reader's place: scroll offsets of the DAG,
// opened <details> (a traceback being read) and the zoom stay as they were.
function replaceKeepingView(el, html) {
  const scrolls = Array.from(el.querySelectorAll(".dag-scroll")).map((s) => [s.scrollLeft, s.scrollTop]);
  const opened = new Set(Array.from(el.querySelectorAll("details[open]")).map(detailsKey));
  el.innerHTML = html;
  el.querySelectorAll(".dag-scroll").forEach((s, i) => {
    if (scrolls[i]) { s.scrollLeft = scrolls[i][0]; s.scrollTop = scrolls[i][1]; }
  });
  el.querySelectorAll("details").forEach((d) => { if (opened.has(detailsKey(d))) d.open = true; });
  applyZoom();
}

function detailsKey(d) {
  const owner = d.closest("[data-attempt]");
  return (owner ? owner.dataset.attempt : "") + "/" + (d.querySelector("summary") || {}).textContent;
}

let zoom = 1;
function applyZoom() {
  document.querySelectorAll("svg.dag").forEach((svg) => {
    const w = Number(svg.getAttribute("viewBox").split(" ")[2]);
    svg.style.width = Math.round(w * zoom) + "px";
    svg.style.height = "auto";
  });
  const label = document.getElementById("zoom-level");
  if (label) label.textContent = Math.round(zoom * 100) + "%";
}

function findTask(text) {
  const wanted = text.trim().toLowerCase();
  if (!wanted) return;
  const boxes = Array.from(document.querySelectorAll("svg.dag g.task"));
  const hit = boxes.find((g) => g.dataset.task.toLowerCase() === wanted)
    || boxes.find((g) => g.dataset.task.toLowerCase().includes(wanted));
  if (!hit) { showResult(false, "no task matches " + JSON.stringify(text)); return; }
  hit.scrollIntoView({ block: "center", inline: "center" });
  selectTask(hit.dataset.task);
}

function refreshAll(force) {
  document.querySelectorAll("[data-live]").forEach((el) => refresh(el, force));
}

function sessionId() {
  const live = document.getElementById("session-live");
  return live ? live.dataset.session : null;
}

function markSelected() {
  const panel = document.getElementById("task-panel");
  const chosen = panel && panel.dataset.task;
  document.querySelectorAll("svg.dag g.task").forEach((g) => {
    g.classList.toggle("selected", g.dataset.task === chosen);
  });
}

function selectTask(taskId) {
  const sid = sessionId();
  const panel = document.getElementById("task-panel");
  if (!sid || !panel) return;
  panel.dataset.task = taskId;
  panel.dataset.live = "/fragments/sessions/" + encodeURIComponent(sid) + "/tasks/" + encodeURIComponent(taskId);
  panel.dataset.fp = "";
  panel.innerHTML = '<p class="muted" data-state="loading">Loading task ' + taskId.replace(/[<>&"]/g, "") + "…</p>";
  const live = document.getElementById("session-live");
  live.dataset.live = "/fragments/sessions/" + encodeURIComponent(sid) + "?task=" + encodeURIComponent(taskId);
  history.replaceState(null, "", "#task=" + encodeURIComponent(taskId));
  markSelected();
  refresh(panel, true);
}

function showResult(ok, text, url) {
  const box = document.getElementById("result");
  box.hidden = false;
  box.className = "result " + (ok ? "ok" : "error");
  box.dataset.ok = ok ? "1" : "0";
  box.textContent = text;
  if (url) {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = " open it →";
    box.appendChild(a);
  }
}

function confirmWith(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function submitAction(form) {
  if (!(await confirmWith(form.dataset.confirm))) return;
  const body = Object.fromEntries(new FormData(form).entries());
  let resp, data;
  try {
    resp = await fetch(form.dataset.action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Orchestrator-CSRF": csrf() },
      body: JSON.stringify(body),
    });
    data = await resp.json();
  } catch (err) {
    showResult(false, "the action did not reach the server (" + err + "): is `orchestrator ui` still running?");
    return;
  }
  showResult(!!data.ok, data.ok ? data.message : "refused: " + data.error, data.url);
  refreshAll(true);
}

document.addEventListener("click", (ev) => {
  const box = ev.target.closest("svg.dag g.task");
  if (box) selectTask(box.dataset.task);
  const z = ev.target.closest("[data-zoom]");
  if (z) {
    const step = Number(z.dataset.zoom);
    zoom = step === 0 ? 1 : Math.min(2, Math.max(0.25, zoom * step));
    applyZoom();
  }
});
document.addEventListener("keydown", (ev) => {
  const box = ev.target.closest && ev.target.closest("svg.dag g.task");
  if (box && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); selectTask(box.dataset.task); }
});
document.addEventListener("submit", (ev) => {
  if (ev.target.id === "find-task") {
    ev.preventDefault();
    findTask(ev.target.elements.task.value);
    return;
  }
  const form = ev.target.closest("form[data-action]");
  if (!form) return;
  ev.preventDefault();
  submitAction(form);
});
document.addEventListener("DOMContentLoaded", () => {
  const m = location.hash.match(/^#task=(.+)$/);
  if (m) selectTask(decodeURIComponent(m[1]));
  if (document.querySelector("[data-live]")) setLiveStatus("live", true);
  setInterval(() => { if (!document.hidden) refreshAll(false); }, POLL_MS);
});
