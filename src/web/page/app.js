// The live page: one EventSource on /events, each message a JSON snapshot that redraws the page.
"use strict";
const $ = (id) => document.getElementById(id);
const show = (v) => (v === null || v === undefined ? "–" : String(v));
const time = (ms) => new Date(ms).toLocaleTimeString();
const since = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s";
};

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(td, action, id, enabled) {
  const b = document.createElement("button");
  b.textContent = action;
  b.dataset.action = action;
  b.disabled = !enabled;
  b.onclick = async () => {
    b.disabled = true;
    const msg = $("ctlmsg");
    msg.hidden = false;
    msg.textContent = action + " " + id + "…";
    try {
      const r = await fetch("/control/" + action + "/" + id, { method: "POST", headers: { "x-bank-control": "1" } });
      msg.textContent = (await r.text()).trim();
    } catch (e) {
      msg.textContent = action + " " + id + ": " + e;
    }
  };
  td.appendChild(b);
}

function branches(snap) {
  const body = $("branches").tBodies[0];
  body.textContent = "";
  for (const b of snap.branches) {
    const tr = document.createElement("tr");
    tr.id = "branch-" + b.id;
    tr.dataset.reachable = b.reachable;
    tr.className = b.health + (b.id === snap.leader ? " leader" : "");
    cell(tr, b.id);
    cell(tr, b.address);
    cell(tr, show(b.role), "role role-" + b.role);
    cell(tr, show(b.term));
    cell(tr, show(b.last_log_index) + " / " + show(b.committed_index) + " / " + show(b.applied_index));
    cell(tr, show(b.lag));
    const state = !b.reachable ? "unreachable" : b.cut_off ? "cut off" : b.health;
    cell(tr, state, "health health-" + (b.cut_off && b.reachable ? "degraded" : b.health));
    cell(tr, show(b.digest), "digest").title = b.error || "";
    cell(tr, b.requests_per_second == null ? "–" : b.requests_per_second.toFixed(1));
    cell(tr, b.latency_ms == null ? "–" : b.latency_ms.toFixed(2) + " ms");
    const ctl = cell(tr, "", "ctl");
    const up = b.reachable;
    button(ctl, "stop", b.id, up);
    button(ctl, "restart", b.id, !up);
    button(ctl, "cut", b.id, up && !b.cut_off);
    button(ctl, "heal", b.id, b.cut_off);
    body.appendChild(tr);
  }
}

function list(id, items, render) {
  const ol = $(id);
  ol.textContent = "";
  for (const item of items.slice().reverse()) {
    const li = document.createElement("li");
    render(li, item);
    ol.appendChild(li);
  }
}

function draw(snap) {
  document.body.classList.toggle("controls", !!snap.controls);
  $("balance").textContent = show(snap.original_balance);
  $("accounts").textContent = show(snap.accounts);
  $("money").textContent = show(snap.money);
  const err = $("error");
  err.hidden = !snap.error;
  err.textContent = snap.error || "";
  $("leader").textContent = snap.leader
    ? "leader: branch " + snap.leader + " for " + since(snap.leader_since_ms)
    : "no leader";
  $("leader").className = "pill " + (snap.leader ? "ok" : "bad");
  branches(snap);
  list("timeline", snap.timeline, (li, c) => {
    li.textContent = time(c.at_ms) + ": " + (c.leader ? "branch " + c.leader + " leads (term " + show(c.term) + ")" : "no leader");
  });
  $("activity-box").hidden = snap.activity.length === 0;
  list("activity", snap.activity, (li, a) => {
    const money = a.interface === "query" ? "" : " " + a.money;
    const via = a.leader && a.leader !== a.branch ? " → leader " + a.leader : "";
    li.textContent = time(a.at_ms) + ": customer " + a.customer + " " + a.interface + money +
      " at branch " + a.branch + via + ": " + a.result + ", balance " + a.balance;
    if (a.result !== "success") li.className = "fail";
  });
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => { $("conn").textContent = "live"; $("conn").className = "pill ok"; };
  source.onmessage = (m) => { try { draw(JSON.parse(m.data)); } catch (e) { console.error(e); } };
  source.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "pill bad"; };
}
connect();
