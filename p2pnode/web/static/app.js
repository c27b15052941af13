// The p2pnode web view: loads JSON snapshots from this daemon and follows its event stream.
// No framework and nothing from the network but this daemon: text goes in with textContent
// (never innerHTML), so a job name or a peer's version string cannot inject markup.
"use strict";

const PHASES = ["distribution", "training", "collection", "aggregation", "validation", "completed"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function short(id) { return id ? id.slice(0, 6) + "…" + id.slice(-6) : ""; }
function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// -- sections -----------------------------------------------------------------------------------

function renderNode(d) {
  if (d.error) return;
  document.getElementById("node").textContent =
    short(d.peer_id) + " · v" + d.version + " · " + d.connected_peers + " peers connected";
  document.getElementById("node").title = d.peer_id;
}

function renderMembers(d) {
  const body = document.querySelector("#members tbody");
  if (d.error) { body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "error" }, d.error))); return; }
  const rows = d.members.map((m) => el("tr", { "data-peer": m.peer_id, "data-state": m.state, class: m.self ? "self" : "" },
    el("td", { class: "mono", title: m.peer_id }, short(m.peer_id)),
    el("td", { class: "state state-" + m.state }, m.state),
    el("td", {}, m.last_heard === null ? "–" : num(m.last_heard, 1) + " s ago"),
    el("td", {}, num(m.reliability, 2)),
    el("td", {}, m.capabilities.cpu_cores),
    el("td", {}, m.load.free_slots),
    el("td", {}, m.version)));
  body.replaceChildren(...rows);
  const alive = d.members.filter((m) => m.state === "alive").length;
  document.getElementById("members-count").textContent = alive + " alive of " + d.members.length;
}

function txText(t) {
  if (t.type === "app" && t.name) {
    let s = t.app + " " + t.name;
    if (t.job) s += " " + t.job.slice(0, 8);
    if (t.round !== undefined) s += " round " + t.round;
    if (t.accuracy !== undefined) s += " · accuracy " + num(t.accuracy, 3);
    return s;
  }
  if (t.type === "app") return t.app;
  if (t.type === "kv_put") return "kv_put " + t.key;
  if (t.type === "set_committee") return "committee epoch " + t.epoch;
  return t.type;
}

let lastSeenSeq = 0;
function renderLog(d) {
  const list = document.getElementById("log");
  if (d.error) { list.replaceChildren(el("li", { class: "error" }, d.error)); return; }
  document.getElementById("log-top").textContent = d.last ? "up to #" + d.last + (d.view !== null ? " · view " + d.view : "") : "";
  list.setAttribute("start", String(d.last || 0));
  const items = d.entries.map((e) => el("li", { "data-seq": e.seq, class: lastSeenSeq && e.seq > lastSeenSeq ? "fresh" : "" },
    el("span", { class: "mono muted" }, e.digest.slice(0, 8) + " "),
    e.txs.length ? e.txs.map(txText).join("; ") : "(empty)"));
  list.replaceChildren(...items);
  lastSeenSeq = Math.max(lastSeenSeq, d.last || 0);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// One line chart of a value per round: axes, the line, its points, the first and last values.
function chart(points, label, cls) {
  const W = 320, H = 160, L = 40, R = 10, T = 18, B = 22;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, "data-series": label, "data-points": points.length });
  const title = svg("text", { x: L, y: 12 });
  title.textContent = label;
  root.append(title, svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!points.length) return root;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const px = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const py = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  root.append(svg("polyline", { class: "line " + cls, points: points.map((p) => px(p[0]) + "," + py(p[1])).join(" ") }));
  for (const p of points) root.append(svg("circle", { cx: px(p[0]), cy: py(p[1]), r: 2.5, class: cls, fill: "currentColor" }));
  const labels = [[L - 4, py(y1) + 4, num(y1, 3), "end"], [L - 4, py(y0) + 4, num(y0, 3), "end"],
    [px(x0), H - 6, "round " + x0, "start"], [px(x1), H - 6, String(x1), "end"]];
  for (const [x, y, text, anchor] of labels) {
    const t = svg("text", { x, y, "text-anchor": anchor });
    t.textContent = text;
    root.append(t);
  }
  return root;
}

function phaseStrip(current) {
  const strip = el("div", { class: "phases", "data-round": current.round });
  strip.append(el("span", { class: "muted" }, "round " + current.round + ":"));
  const seen = new Map(current.phases);
  const last = current.phases.length ? current.phases[current.phases.length - 1][0] : null;
  for (const p of PHASES) {
    if (!seen.has(p)) continue;
    strip.append(el("span", { class: "phase" + (p === last ? " last" : ""), "data-phase": p }, p + " +" + num(seen.get(p), 1) + "s"));
  }
  if (!current.phases.length) strip.append(el("span", { class: "muted" }, "waiting"));
  return strip;
}

function renderJobs(d) {
  const box = document.getElementById("jobs");
  if (d.error) { box.replaceChildren(el("p", { class: "muted" }, d.error)); return; }
  if (!d.jobs.length) { box.replaceChildren(el("p", { class: "muted" }, "no jobs")); return; }
  box.replaceChildren(...d.jobs.map((j) => {
    const acc = j.history.filter((h) => h.accuracy !== null).map((h) => [h.round, h.accuracy]);
    const loss = j.history.filter((h) => h.loss !== null).map((h) => [h.round, h.loss]);
    return el("div", { class: "job", "data-job": j.job, "data-rounds-done": j.rounds_done, "data-status": j.status },
      el("h3", {}, j.name + " ", el("span", { class: "muted mono", title: j.job }, j.job.slice(0, 8))),
      el("div", {}, j.status + " · " + j.rounds_done + " of " + j.rounds + " rounds committed · accuracy " +
        num(j.accuracy, 3) + " · loss " + num(j.loss, 3) + (j.reason ? " · " + j.reason : "")),
      j.status === "running" ? phaseStrip(j.current) : "",
      el("div", { class: "charts" }, chart(acc, "accuracy", "acc"), chart(loss, "loss", "loss")));
  }));
}

function renderTransfers(d) {
  const body = document.querySelector("#transfers tbody");
  if (d.error) { body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "error" }, d.error))); return; }
  if (!d.transfers.length) { body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none"))); return; }
  body.replaceChildren(...d.transfers.map((t) => el("tr", { "data-key": t.key },
    el("td", { class: "mono", title: t.key }, t.key.slice(0, 14) + "…"),
    el("td", {}, t.kind || "–"),
    el("td", {}, t.job ? t.job.slice(0, 8) + " / " + t.round : "–"),
    el("td", {}, t.local_chunks + " / " + t.chunks),
    el("td", {}, num(t.seconds, 1)))));
}

// -- loading: each section is fetched again when an event says it changed ---------------------

const RENDER = { node: renderNode, members: renderMembers, log: renderLog, jobs: renderJobs, transfers: renderTransfers };
const pending = new Map();

function reload(section) {
  if (pending.has(section)) return; // one reload in flight (or queued) per section
  pending.set(section, setTimeout(async () => {
    try {
      RENDER[section](await getJson("/api/" + section));
    } catch (e) {
      console.warn(e);
    } finally {
      pending.delete(section);
    }
  }, 150));
}

async function loadAll() {
  const snap = await getJson("/api/snapshot");
  for (const [name, render] of Object.entries(RENDER)) render(snap[name]);
  document.body.dataset.loaded = "1";
}

function follow() {
  const live = document.getElementById("live");
  const events = new EventSource("/events");
  events.addEventListener("hello", () => {
    live.textContent = "live"; live.className = "badge on";
    loadAll().catch(console.warn); // after a reconnect, catch up on what was missed
  });
  events.addEventListener("members", () => { reload("members"); reload("node"); });
  events.addEventListener("commits", () => reload("log"));
  events.addEventListener("jobs", () => reload("jobs"));
  events.addEventListener("rounds", () => reload("jobs"));
  // What changes without a bus event (transfers, "last heard") comes pushed, snapshot and all.
  events.addEventListener("section", (e) => {
    const msg = JSON.parse(e.data);
    if (RENDER[msg.name]) RENDER[msg.name](msg.data);
  });
  events.onerror = () => { live.textContent = "reconnecting"; live.className = "badge off"; };
}

document.addEventListener("DOMContentLoaded", () => {
  loadAll().catch(console.warn);
  follow();
});
