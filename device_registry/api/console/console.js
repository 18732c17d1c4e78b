// The duty console: logs in with a token (POST /session sets an HttpOnly cookie), then follows
// /console/events (server-sent events) and draws tiles, incidents, a map and an incident's detail.
// Plain browser JavaScript, no framework; every file comes from this server.
"use strict";

const LEVELS = ["blue", "yellow", "orange", "red"];
const $ = (selector) => document.querySelector(selector);

const state = {
  me: null,
  config: null,
  places: new Map(),
  incidents: new Map(),
  tiles: new Map(),
  selected: null,  // the incident in the detail panel
  device: null,  // or the device in it
  deviceShownAt: 0,  // when the device's view was last asked for (Date.now())
  events: null,
  clockFormat: null,
  stampFormat: null,
  timeFormat: null,
  skew: 0,  // the server's clock less this workstation's, in ms (from the stream's hello)
  devices: null,  // the stream's last "devices" event
};

const DEVICE_REFRESH_MS = 15_000;  // a device's view is asked for again this often
const SKEW_SHOWN_S = 30;  // a workstation's clock this far off the server's is said so

// --- small helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function problem(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `the server answered ${status}`;
}

async function call(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(path, options);
  const text = await answer.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
  if (!answer.ok) {
    const error = new Error(problem(parsed, answer.status));
    error.status = answer.status;
    throw error;
  }
  return parsed;
}

function duration(seconds) {
  const s = Math.abs(Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// The server's time: countdowns and ages go by it, not by a workstation's clock that may drift.
function now() { return Date.now() + state.skew; }
function since(iso) { return (now() - Date.parse(iso)) / 1000; }
function stamp(iso) { return iso ? state.stampFormat.format(new Date(iso)) : "–"; }
function levelTag(level) { return el("span", { class: `level level-${level}` }, level); }

// An incident's level is its peak. Beside it, when they differ, the level its alerts fire at
// now ("now quiet": none fires), so a flood that fell from red to blue does not read as red.
function nowTag(incident) {
  if (!("level_now" in incident) || incident.state === "closed") return null;
  if (incident.level_now === incident.level) return null;
  return el("span", {
    class: `now${incident.level_now ? ` now-${incident.level_now}` : ""}`,
    title: "the highest level its alerts fire at now (the tag is its peak)",
  }, incident.level_now ? `now ${incident.level_now}` : "now quiet");
}

// --- login -------------------------------------------------------------------------------

async function logIn(token) {
  return call("POST", "/session", { token });
}

function showLogin(message) {
  $("#console").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function boot() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    // the link 'cityvitals up' prints: log in with it, then drop it from the address bar
    history.replaceState(null, "", location.pathname + location.search);
    try {
      await logIn(decodeURIComponent(match[1]));
    } catch (error) {
      showLogin(error.message);
      return;
    }
  }
  try {
    state.me = await call("GET", "/me");
  } catch (error) {
    showLogin(error.status === 401 ? "" : error.message);
    return;
  }
  await start();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    state.me = await logIn($("#token").value.trim());
    $("#token").value = "";
    await start();
  } catch (error) {
    showLogin(error.message);
  }
});

$("#logout").addEventListener("click", async () => {
  if (state.events) state.events.close();
  await call("DELETE", "/session").catch(() => null);
  location.reload();
});

// --- start: who, the zone, the places, the stream -------------------------------------------

async function start() {
  $("#login").hidden = true;
  $("#console").hidden = false;
  state.config = await call("GET", "/console/config");
  const zone = state.config.timezone;
  state.clockFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });
  state.timeFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, hour: "2-digit", minute: "2-digit",
  });
  state.stampFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit",
  });
  $("#who").textContent = state.me.name;
  $("#role").textContent = state.me.role.replace("_", " ");
  const scoped = state.me.scope || [];  // "Simulated City / District 1", not "sim/sim-d1"
  $("#scope").textContent = scoped.length
    ? scoped.map((id) => (state.config.scope_names || {})[id] || id).join(" / ") : state.me.scope_text;
  $("#scope").title = state.me.scope_text;
  if (state.me.department) {  // a department operator answers for its department
    $("#department").textContent = state.me.department;
    $("#department").hidden = false;
  }
  const places = await call("GET", "/places");
  for (const place of places) state.places.set(place.place_id, place);
  offerReports();
  offerDepartments();
  $("#device-find").hidden = !(state.me.permissions || []).includes("devices.read");
  drawMap();
  follow();
  tick();
  setInterval(tick, 1000);
}

function follow() {
  const events = new EventSource("/console/events");
  state.events = events;
  events.addEventListener("open", () => setLive(true));
  events.addEventListener("hello", (e) => onHello(JSON.parse(e.data)));
  events.addEventListener("error", () => setLive(false));
  events.addEventListener("incident", (e) => onIncident(JSON.parse(e.data)));
  events.addEventListener("tile", (e) => onTile(JSON.parse(e.data)));
  events.addEventListener("alerts", (e) => onAlerts(JSON.parse(e.data)));
  events.addEventListener("refusal", (e) => onRefusal(JSON.parse(e.data)));
  events.addEventListener("devices", (e) => onDevices(JSON.parse(e.data)));
  events.addEventListener("end", (e) => {
    events.close();
    const end = JSON.parse(e.data);
    if (end.reload) {  // the same token, the user's access changed: read again with it
      $("#live").textContent = end.reason;
      setTimeout(() => location.reload(), 1500);
      return;
    }
    showLogin(end.reason);
  });
}

function onHello(hello) {
  state.skew = Date.parse(hello.server_time) - Date.now();
  const off = Math.abs(state.skew) / 1000;
  const note = $("#clock-skew");
  note.hidden = off < SKEW_SHOWN_S;
  note.textContent = `this workstation's clock is ${duration(off)} `
    + `${state.skew < 0 ? "ahead of" : "behind"} the server's: the times here are the server's`;
  tick();
}

function setLive(on) {
  const live = $("#live");
  live.textContent = on ? "live" : "reconnecting";
  live.className = on ? "live on" : "live off";
}

function tick() {
  $("#clock").textContent = state.clockFormat.format(new Date(now()));
  for (const row of document.querySelectorAll("#incidents tbody tr")) {
    const incident = state.incidents.get(row.dataset.incidentId);
    if (!incident) continue;
    row.querySelector(".age").textContent = age(incident);
    paintSla(row.querySelector(".sla"), incident);
  }
  for (const seen of document.querySelectorAll("#silent .seen")) {
    seen.textContent = lastSeen(seen.dataset.lastSeen);
  }
  if (state.device && Date.now() - state.deviceShownAt > DEVICE_REFRESH_MS) showDevice(state.device);
  for (const tile of document.querySelectorAll(".tile[data-window-end]")) {
    // the window the value is of, not only its age: a 5-minute window's deepest water may
    // be 10 minutes old by now
    const age = duration(since(tile.dataset.windowEnd));
    const start = tile.dataset.windowStart;
    tile.querySelector(".age").textContent = start
      ? `${state.timeFormat.format(new Date(start))}–${state.timeFormat.format(new Date(tile.dataset.windowEnd))}, ended ${age} ago`
      : `${age} ago`;
  }
}

// --- citizen reports: a duty officer takes a hotline call -------------------------------

// the reassign form's departments: those the routing names and those registered
function offerDepartments() {
  $("#departments").replaceChildren(...(state.config.departments || []).map((d) => el("option", { value: d })));
}

function offerReports() {
  if (!(state.me.permissions || []).includes("reports.create")) return;
  const places = [...state.places.values()].sort((a, b) => a.path.join("/").localeCompare(b.path.join("/")));
  $("#report-place").replaceChildren(...places.map((p) => el(
    "option", { value: p.place_id }, `${"  ".repeat(p.path.length - 1)}${named(p)}`,
  )));
  const categories = Object.entries(state.config.categories || {});
  $("#report-category").replaceChildren(...categories.map(([id, title]) => el(
    "option", { value: id }, title || id,
  )));
  $("#report").hidden = false;
}

$("#report-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("#report-result");
  try {
    const sent = await call("POST", "/reports", {
      place_id: $("#report-place").value,
      category: $("#report-category").value,
      channel: $("#report-channel").value,
      text: $("#report-text").value.trim(),
    });
    result.textContent = `report ${sent.report_id.slice(0, 8)} sent: its incident comes into the list`;
    result.className = "result sent";
    $("#report-text").value = "";
  } catch (error) {
    result.textContent = error.message;
    result.className = "result refused";
  }
});

// --- incidents ---------------------------------------------------------------------------

function deadline(incident) {
  if (incident.state === "closed" || incident.state === "verified" || incident.state === "handled") {
    return null;
  }
  if (incident.state === "accepted" || incident.state === "on_site") {
    return incident.handle_by ? ["handle", incident.handle_by] : null;
  }
  return incident.accept_by ? ["accept", incident.accept_by] : null;
}

// A limit as the detail shows it: the one that runs now plainly; one that was answered says
// whether in time (the timeline's last accept, or its last step to handled: "met, accepted
// 04:14:13"); one that no longer runs otherwise says why (a closed incident's deadlines are
// history, not a countdown).
function limit(incident, name, at, transitions = []) {
  if (!at) return "–";
  const running = deadline(incident);
  if (running && running[0] === name) return stamp(at);
  const waiting = incident.state === "new" || incident.state === "dispatched";
  if (name === "handle" && waiting) return `${stamp(at)} · once accepted`;  // the next limit
  const answer = [...transitions].reverse().find((t) => (name === "accept"
    ? t.action === "accept" : t.to_state === "handled"));
  if (answer) {
    const verb = name === "accept" ? "accepted" : "handled";
    const inTime = Date.parse(answer.ts) <= Date.parse(at);
    return `${stamp(at)} · ${inTime ? "met" : "missed"}, ${verb} ${stamp(answer.ts)}`;
  }
  return `${stamp(at)} · ended: ${incident.state}`;
}

// The timeline with the signals that joined the incident in a row (attach steps that change
// nothing: a flood's sensors one after another) as one line, "attach ×9", their reasons in
// its title: the steps people took stay in sight.
function folded(transitions) {
  const out = [];
  for (const t of transitions) {
    const last = out[out.length - 1];
    const same = last && t.action === "attach" && last.action === "attach"
      && last.actor === t.actor && last.to_state === t.to_state;
    if (same) {
      last.count += 1;
      last.until = t.ts;
      if (t.reason) last.reasons.push(t.reason);
      continue;
    }
    out.push({ ...t, count: 1, until: null, reasons: t.reason ? [t.reason] : [] });
  }
  return out;
}

// A place's path by its names, as the list names places ("District 1 / Canal Street").
function pathNames(path) {  // the places above a scope are not listed: their names are
  const above = state.config.scope_names || {};
  return path.map((id) => (state.places.get(id) || { name: above[id] || id }).name).join(" / ");
}

// How long it has been open: since it last reopened, if it did ("1m 30s ↺"; a red flood
// reopened a minute ago read as half an hour unattended, counted from its first opening).
// A closed one is open no more: it says so (its last step's time in the cell's title: the
// close's, unless a note came after; the column stays narrow on a laptop).
function age(incident) {
  if (incident.state === "closed") return "closed";
  return incident.reopened_at
    ? `${duration(since(incident.reopened_at))} ↺` : duration(since(incident.opened_at));
}

function paintSla(cell, incident) {
  const due = deadline(incident);
  if (!due && incident.state === "handled" && incident.level_now) {
    // no limit runs once a department says handled, but its alerts still fire: say so
    cell.textContent = `handled, still ${incident.level_now}`;
    cell.className = "sla firing";
    cell.title = "the department said handled while its alerts still fire: it cannot be verified until they end";
    return;
  }
  cell.title = "";
  if (!due) {
    cell.textContent = "–";
    cell.className = "sla";
    return;
  }
  const left = (Date.parse(due[1]) - now()) / 1000;
  cell.textContent = left >= 0 ? `${due[0]} in ${duration(left)}` : `${due[0]} late ${duration(left)}`;
  cell.className = left >= 0 ? "sla" : "sla late";
}

let placesAsked = null;

async function learnPlaces() {
  // a place made since the page loaded (a new device's street): read the places again, once
  // at a time
  if (!placesAsked) {
    placesAsked = call("GET", "/places").then((places) => {
      for (const place of places) state.places.set(place.place_id, place);
      drawMap();
      drawIncidents();
      drawMarkers();
      if (state.devices) drawDevices();  // their places by name
    }).catch(() => null).finally(() => { placesAsked = null; });
  }
  return placesAsked;
}

function onIncident(incident) {
  state.incidents.set(incident.incident_id, incident);
  drawIncidents();
  drawMarkers();
  if (!state.places.has(incident.place_id)) learnPlaces();
  if (state.selected === incident.incident_id) showDetail(incident.incident_id);
}

function order(a, b) {
  const open = (i) => (i.state === "closed" ? 1 : 0);
  return open(a) - open(b)
    || LEVELS.indexOf(b.level) - LEVELS.indexOf(a.level)
    || Date.parse(b.opened_at) - Date.parse(a.opened_at);
}

// an incident no department holds: new and never sent yet, or every one refused it
function unassigned(incident) {
  return incident.state === "new"
    ? el("span", {
      class: "unassigned",
      title: "no department holds it: every one refused it (a duty officer reassigns it), or it waits for a storm's digest (its steps say which)",
    }, "unassigned")
    : "–";
}

function drawIncidents() {
  const body = $("#incidents tbody");
  const all = [...state.incidents.values()].sort(order);
  body.replaceChildren(...all.map((incident) => {
    const row = el(
      "tr",
      {
        "data-incident-id": incident.incident_id,
        "data-state": incident.state,
        class: [incident.state === "closed" ? "closed" : "",
          state.selected === incident.incident_id ? "selected" : ""].join(" ").trim(),
        title: incident.title,
      },
      // data-label: a narrow screen shows each row as a card, each cell named
      // the time left second, after the level: on a laptop the long names give way, not it
      el("td", { class: "level-cell", "data-label": "Level" }, levelTag(incident.level), nowTag(incident)),
      el("td", { class: "sla", "data-label": "SLA" }),
      el("td", { class: "place", "data-label": "Place" }, placeName(incident.place_id)),
      el("td", { class: "category", "data-label": "Category" }, incident.category),
      el("td", { class: "state", "data-label": "State" }, incident.state),
      el("td", { class: "department", "data-label": "Department", title: incident.department || "" },
        incident.department || unassigned(incident)),
      el("td", { class: "tier", "data-label": "Tier" }, incident.tier || "–", missed(incident)),
      el("td", {  // who acknowledged it (cleared when it reopens or goes to another tier)
        class: "seen",
        "data-label": "Seen by",
        title: incident.acknowledged_by
          ? `${incident.acknowledged_by}, acknowledged ${stamp(incident.acknowledged_at)}` : "",
      }, incident.acknowledged_by || "–"),
      el("td", {
        class: "age",
        "data-label": "Age",
        title: incident.state === "closed"
          ? `closed; last step ${stamp(incident.updated_at)}; opened ${stamp(incident.opened_at)}`
          : incident.reopened_at
            ? `reopened ${stamp(incident.reopened_at)}; opened ${stamp(incident.opened_at)}` : "",
      }, age(incident)),
    );
    paintSla(row.querySelector(".sla"), incident);
    row.addEventListener("click", () => select(incident.incident_id));
    return row;
  }));
  const open = all.filter((i) => i.state !== "closed").length;
  $("#incident-count").textContent = `${open} open`;
  $("#no-incidents").hidden = all.length > 0;
}

// the limits a tier missed (each escalated the incident a tier up), on its row: its
// new deadline starts afresh, so without this an escalated incident looks like a new one
function missed(incident) {
  const n = incident.escalations || 0;
  if (!n) return "";
  // the space outside the span: on a small laptop "· 2 missed" goes under the tier, whole
  return [" ", el("span", {
    class: "missed",
    title: `${n} limit${n > 1 ? "s" : ""} missed (accept or handle, at this tier or below)`,
  }, `· ${n} missed`)];  // not "↑3": a city-tier breach moves no tier
}

function placeName(placeId) {
  const place = state.places.get(placeId);
  return place ? named(place) : placeId;
}

// "Canal Street (nd-s1)"; a place named by its id (made by a device's path) once.
function named(place) {
  return place.name === place.place_id ? place.place_id : `${place.name} (${place.place_id})`;
}

// --- detail and actions ------------------------------------------------------------------

function select(incidentId) {
  state.selected = incidentId;
  state.device = null;
  $("#action-result").textContent = "";
  showActions([]);  // the last incident's buttons go until this one's detail says which
  showWithheld({});
  drawIncidents();
  showDetail(incidentId);
}

async function showDetail(incidentId) {
  let detail;
  let readings = null;
  try {
    detail = await call("GET", `/incidents/${incidentId}`);
    readings = await call("GET", `/incidents/${incidentId}/readings`).catch(() => null);
  } catch (error) {
    $("#detail").replaceChildren(el("p", { class: "error" }, error.message));
    showActions([]);
    return;
  }
  if (state.selected !== incidentId) return;
  showActions(detail.actions);
  showWithheld(detail.withheld || {});
  const i = detail.incident;
  $("#detail-kind").textContent = "Incident";
  $("#detail-title").textContent = i.title;
  $("#detail-title").classList.remove("id");
  const facts = [
    ["level", levelTag(i.level)], ["state", i.state], ["category", i.category],
    ["place", pathNames(i.place_path)], ["department", i.department || unassigned(i)],
    ["tier", i.tier || "–"], ["opened", stamp(i.opened_at)], ["updated", stamp(i.updated_at)],
    ["acknowledged", i.acknowledged_by ? `${i.acknowledged_by} · ${stamp(i.acknowledged_at)}` : "–"],
    ["accept by", limit(i, "accept", i.accept_by, detail.transitions)],
    ["handle by", limit(i, "handle", i.handle_by, detail.transitions)],
    ["devices", i.devices.length ? deviceLinks(i.devices) : "–"], ["limits missed", i.escalations],
  ];
  const parts = [
    el("dl", {}, facts.map(([name, value]) => [
      el("dt", {}, name), el("dd", { "data-field": name.replace(" ", "_") }, value),
    ])),
    el("h3", {}, "Timeline"),
    el("ol", { class: "timeline" }, folded(detail.transitions).map((t) => el(
      "li", { "data-action": t.action, title: t.reasons.length > 1 ? t.reasons.join("\n") : "" },
      `${stamp(t.ts)}${t.until ? ` – ${stamp(t.until)}` : ""} · ${t.action}`
        + `${t.count > 1 ? ` ×${t.count}` : ""} · ${t.from_state || "–"} → ${t.to_state} · ${t.actor}`,
      t.reason ? ` · "${t.reason}${t.count > 1 ? " …" : ""}"` : "",
    ))),
    el("h3", {}, `Alerts (${detail.alerts.length})`),
    el("ul", {}, detail.alerts.map((a) => el(
      "li", {}, levelTag(a.level), ` ${a.status} · ${a.rule_id} · ${a.device_id} · ${a.summary}`,
      // the summary is what it read when it reached its level; what it reads now beside it
      a.latest_value === null || a.latest_value === undefined ? ""
        : el("span", { class: "latest", title: "its device's newest reading of the metric" },
          ` · newest ${a.metric} ${Number(a.latest_value.toPrecision(4))} at ${stamp(a.latest_ts)}`),
    ))),
    el("h3", {}, `Dispatches (${detail.dispatches.length})`),
    el("ul", {}, detail.dispatches.map((d) => el(
      "li", { "data-kind": d.kind }, d.kind === "withdrawal"
        ? `${stamp(d.ts)} · withdrawn from ${d.department} (${d.tier}) · ${d.reason}`
        : d.kind === "revision"
          ? `${stamp(d.ts)} · limits revised for ${d.department} (${d.tier}) · ${d.reason}`
          : `${stamp(d.ts)} · ${d.kind} → ${d.department} (${d.tier}) · accept by ${stamp(d.accept_by)}${d.summary ? ` · "${d.summary}"` : ""}`,
    ))),
  ];
  const undelivered = detail.undelivered || [];
  if (undelivered.length) {  // the notifier gave up: the department may not know
    parts.push(el("h3", { class: "undelivered" }, `Not delivered (${undelivered.length})`), el("ul", { class: "undelivered" }, undelivered.map((u) => el(
      "li", {}, `${stamp(u.given_up_at)} · ${u.kind || u.event} for ${u.department || "–"} → ${u.url} · ${u.outcome} · `,
      "send again: ", el("code", {}, "cityvitals resend"), ", or call the department",
    ))));
  }
  const cameras = detail.camera_snapshots || [];
  if (cameras.length) {  // what the cameras behind its alerts saw, newest first
    parts.push(el("h3", {}, "Camera snapshots"), el("ul", { class: "snapshots" }, cameras.map((c) => el(
      "li", {}, `${stamp(c.ts)} · ${c.camera_id} · ${c.event_type} ${Number(c.value.toPrecision(3))} · ${c.snapshot_ref}`,
    ))));
  }
  if (i.snapshot_refs.length) {  // the photos citizens' reports came with
    parts.push(el("h3", {}, "Report photos"), el("ul", {}, i.snapshot_refs.map((r) => el("li", {}, r))));
  }
  if (detail.reports.length) {
    parts.push(el("h3", {}, "Reports"), el("ul", {}, detail.reports.map((r) => el(
      "li", {}, `${stamp(r.reported_at)} · ${r.channel} · ${r.text}`,
    ))));
  }
  if (readings && readings.series.length) {
    const at = Date.parse(readings.at), span = readings.span_s * 1000;
    parts.push(el("h3", {}, "Readings ±30 min"), ...readings.series.map((s) => spark(s, at - span, at + span, at)));
  }
  $("#detail").replaceChildren(...parts);
}

// a series over [t0, t1] (ms), a line at `mark` if given
function spark(series, t0, t1, mark = null) {
  const box = el("div", { class: "series" }, el("span", { class: "note" }, `${series.device_id} · ${series.metric}`));
  const values = series.points.map((p) => p[1]);
  const times = series.points.map((p) => Date.parse(p[0]));
  const lo = Math.min(...values), hi = Math.max(...values);
  const x = (t) => ((t - t0) / (t1 - t0)) * 200;
  const y = (v) => 38 - (hi === lo ? 0.5 : (v - lo) / (hi - lo)) * 36;
  const chart = svg("svg", { class: "spark", viewBox: "0 0 200 40", preserveAspectRatio: "none" });
  if (mark !== null) chart.append(svg("line", { x1: x(mark), x2: x(mark), y1: 0, y2: 40 }));
  chart.append(svg("polyline", {
    points: series.points.map((_, k) => `${x(times[k]).toFixed(1)},${y(values[k]).toFixed(1)}`).join(" "),
  }));
  series.points.forEach((_, k) => chart.append(svg("circle", {
    cx: x(times[k]).toFixed(1), cy: y(values[k]).toFixed(1), r: 1.5,
  })));
  // the range of its values, and of the time it spans, in the city's hours
  const span = `${state.timeFormat.format(new Date(t0))} → ${state.timeFormat.format(new Date(t1))}`;
  box.append(chart, el("span", { class: "note" }, `${lo} – ${hi} · ${span}`));
  return box;
}

for (const button of document.querySelectorAll("#actions [data-action]")) {
  button.addEventListener("click", () => act(button.dataset.action));
}

function showActions(actions) {
  // a button for each action the user may send now (the API says which: the incident's
  // state, the user's role and department)
  for (const button of document.querySelectorAll("#actions [data-action]")) {
    button.hidden = !actions.includes(button.dataset.action);
  }
  $("#actions .reassign").hidden = !actions.includes("reassign");
  $("#actions").hidden = actions.length === 0;
}

function showWithheld(withheld) {
  // an action the state allows that waits on the sensors (verify while an alert fires):
  // why there is no button, and what comes instead
  const why = Object.entries(withheld).map(([action, reason]) => `no ${action}: ${reason}`);
  $("#withheld").textContent = why.join("; ");
  $("#withheld").hidden = why.length === 0;
}

async function act(action) {
  const result = $("#action-result");
  const incident = state.incidents.get(state.selected);
  if (!incident) return;
  const reason = $("#action-reason").value.trim();
  const body = { action, reason };
  // a department's answer is to the order shown: once it moved on, the stage refuses it
  if (["accept", "reject", "on_site", "handled"].includes(action) && incident.dispatch_id) {
    body.dispatch_id = incident.dispatch_id;
  }
  if (action === "close" && incident.state !== "verified" && !reason) {
    result.className = "result refused";
    result.textContent = "closing before verification needs a reason: write it above";
    $("#action-reason").focus();
    return;
  }
  if (action === "note" && !reason) {
    result.className = "result refused";
    result.textContent = "write the note above";
    return;
  }
  if (action === "reject" && !reason) {  // the department it goes to next reads it
    result.className = "result refused";
    result.textContent = "a rejection needs a reason: write it above (not ours: a burst main, ...)";
    $("#action-reason").focus();
    return;
  }
  if (action === "reassign") {
    body.department = $("#action-department").value.trim();
    if (!body.department) {
      result.className = "result refused";
      result.textContent = "reassigning needs a department: write its id above";
      $("#action-department").focus();
      return;
    }
    if ($("#action-tier").value) body.tier = $("#action-tier").value;
  }
  try {
    await call("POST", `/incidents/${incident.incident_id}/actions`, body);
    result.className = "result sent";
    result.textContent = `${action} sent`;
    $("#action-reason").value = "";
  } catch (error) {
    result.className = "result refused";
    result.textContent = `${action} refused: ${error.message}`;
  }
}

function onRefusal(refusal) {
  if (refusal.incident_id !== state.selected) return;
  const result = $("#action-result");
  result.className = "result refused";
  result.textContent = `${refusal.action} refused by the incident stage: ${refusal.reason}`;
}

// --- vital signs -------------------------------------------------------------------------

const ARROWS = { up: "▲", down: "▼", flat: "▶" };

function onTile(tile) {
  state.tiles.set(tile.key, tile);
  const tiles = [...state.tiles.values()].sort(
    (a, b) => a.place_id.localeCompare(b.place_id) || a.indicator.localeCompare(b.indicator),
  );
  $("#tiles").replaceChildren(...tiles.map(drawTile));
  tick();
}

function drawTile(tile) {
  // The band's colour: "normal", or the warning level the indicator catalogue gives it.
  const classes = ["tile", tile.band_level ? `band-${tile.band_level}` : "", tile.value === null ? "stale" : ""];
  // A ratio (devices online) reads as a share, as coverage does: 36 %, not 0.3636.
  const share = tile.unit === "ratio";
  const value = tile.value === null ? "–"
    : share ? Math.round(tile.value * 100) : Number(tile.value.toPrecision(4));
  const meta = tile.value !== null
    ? [tile.band && tile.band.replace(/_/g, " "), `coverage ${Math.round(tile.coverage * 100)}%`].filter(Boolean).join(" · ")
    : tile.due_at  // an indicator with no window yet
      ? `first value due ${stamp(tile.due_at)}`
      : `no data this window${tile.previous === null || tile.previous === undefined
        ? "" : ` · previous ${Number(tile.previous.toPrecision(4))}`}`;
  return el(
    "div",
    {
      class: classes.join(" ").trim(),
      "data-key": tile.key,
      "data-window-start": tile.window_start || null,
      "data-window-end": tile.window_end || null,
    },
    el("div", { class: "name" }, `${tile.place_name} · ${tile.indicator}`),
    el("div", {},
      el("span", { class: "value" }, value),
      el("span", { class: "unit" }, share ? "%" : tile.unit),
      tile.trend ? el("span", { class: `trend ${tile.trend}`, title: `previous ${tile.previous}` }, ` ${ARROWS[tile.trend]}`) : null),
    el("div", { class: "meta" }, meta),
    el("div", { class: "meta age" }, ""),
  );
}

function onAlerts(alerts) {
  const parts = LEVELS.filter((l) => alerts.by_level[l]).map((l) => `${alerts.by_level[l]} ${l}`);
  $("#alert-count").textContent = `${alerts.firing} firing alert${alerts.firing === 1 ? "" : "s"}${parts.length ? ": " + parts.join(", ") : ""}`;
  $("#alert-count").title = `${$("#alert-count").textContent} (in scope)`;  // whole, if cut
}

// --- one device: as registered, its liveness, what it sent lately and what was refused ------

function deviceLink(deviceId) {
  // a department operator's role reads no devices: its id, as text
  if (!(state.me.permissions || []).includes("devices.read")) return deviceId;
  const link = el("button", { type: "button", class: "link", "data-device-id": deviceId }, deviceId);
  link.addEventListener("click", () => selectDevice(deviceId));
  return link;
}

function deviceLinks(deviceIds) {
  return deviceIds.flatMap((id, k) => (k ? [", ", deviceLink(id)] : [deviceLink(id)]));
}

function selectDevice(deviceId) {
  state.selected = null;
  state.device = deviceId;
  $("#action-result").textContent = "";
  showActions([]);
  showWithheld({});
  drawIncidents();
  showDevice(deviceId);
}

async function showDevice(deviceId) {
  state.deviceShownAt = Date.now();
  $("#detail-kind").textContent = "Device";
  $("#detail-title").textContent = deviceId;
  $("#detail-title").classList.add("id");  // as typed: an id is not a title to capitalise
  let view;
  try {
    view = await call("GET", `/devices/${encodeURIComponent(deviceId)}/activity`);
  } catch (error) {
    if (state.device !== deviceId) return;
    state.device = null;  // not asked for again: an unknown id stays unknown
    $("#detail").replaceChildren(el("p", { class: "error" }, error.message));
    return;
  }
  if (state.device !== deviceId) return;
  const d = view.device, live = view.liveness, lookback = `${Math.round(view.lookback_s / 86400)} days`;
  const located = d.lat === null || d.lon === null ? "–" : `${d.lat}, ${d.lon}`;
  const liveness = live
    ? el("span", {}, el("span", { class: `status ${live.status}` }, live.status),
      ` ${lastSeen(live.last_seen)} (every ${duration(live.expected_interval_s)})`)
    : d.state === "active" ? "not heard yet" : `not watched (${d.state})`;
  const facts = [
    ["type", d.device_type], ["state", d.state], ["place", pathNames(d.place_path)],
    ["profile", d.profile_id || "–"], ["department", d.department || "–"], ["location", located],
    ["liveness", liveness], ["refused", `${view.refused >= 10000 ? "10,000 or more" : view.refused} in the last ${lookback}`],
  ];
  const parts = [
    el("dl", {}, facts.map(([name, value]) => [el("dt", {}, name), el("dd", { "data-field": name }, value)])),
    el("h3", {}, view.latest.length || !view.camera_events.length ? "Latest values" : "Newest events"),
    view.latest.length || view.camera_events.length
      ? el("ul", { class: "latest" }, [
        ...view.latest.map((p) => el("li", { "data-metric": p.metric }, `${p.metric} ${p.value} · ${stamp(p.ts)}`)),
        ...view.camera_events.map((e) => el("li", { "data-event": e.event_type },
          `${e.event_type} ${Number(e.value.toPrecision(3))} (confidence ${e.confidence}) · ${stamp(e.ts)}${e.snapshot_ref ? ` · ${e.snapshot_ref}` : ""}`)),
      ])
      : el("p", { class: "empty" }, `nothing stored in the last ${lookback}`),
  ];
  if (view.series.length) {
    // from the first reading shown to now: a silence since the last one shows as a gap
    const t1 = now(), first = Math.min(...view.series.map((s) => Date.parse(s.points[0][0])));
    const t0 = Math.min(first, t1 - 60e3);
    const cut = view.cut ? " (the newest 500 of each metric)" : "";
    parts.push(el("h3", {}, `Readings, last ${duration(view.span_s)}${cut}`), ...view.series.map((s) => spark(s, t0, t1)));
  }
  if (view.refused_newest.length) {
    parts.push(el("h3", {}, `Refused (${view.refused})`), el("ul", { class: "refused" }, view.refused_newest.map((r) => el(
      "li", {}, `${stamp(r.received_at)} · ${r.stage} · ${r.reason}`))));
  }
  parts.push(el("h3", {}, `Alerts (${view.alerts.length})`), el("ul", {}, view.alerts.map((a) => el(
    "li", {}, levelTag(a.level), ` ${a.status} · ${a.rule_id} · began ${stamp(a.started_at)} · ${a.summary}`))));
  $("#detail").replaceChildren(...parts);
}

$("#device-find").addEventListener("submit", (event) => {
  event.preventDefault();
  const deviceId = $("#device-id").value.trim();
  if (deviceId) selectDevice(deviceId);
});

// --- devices: how many are online, late, offline; the silent ones, the longest first ---------

function onDevices(devices) {
  state.devices = devices;
  drawDevices();
}

function lastSeen(iso) {
  return iso ? `last seen ${duration(since(iso))} ago` : "never heard";
}

function drawDevices() {
  const { counts, silent, outages } = state.devices;
  $("#device-counts").textContent = `${counts.offline} offline · ${counts.late} late · ${counts.online} online`;
  $("#outages").replaceChildren(...outages.map((o) => el("li", { class: "outage", "data-outage-id": o.outage_id },
    el("span", { class: "status offline" }, "outage"),
    ` ${pathNames(o.place_path)}: ${o.devices_silent} of ${o.devices_total} silent since ${stamp(o.started_at)}`,
    o.above_scope ? " · covers your area" : "")));
  const rows = silent.map((d) => el("li", { "data-device-id": d.device_id },
    el("span", { class: `status ${d.status}` }, d.status),
    " ", deviceLink(d.device_id), ` · ${pathNames(d.place_path)} · `,
    el("span", { class: "seen", "data-last-seen": d.last_seen || "" }, lastSeen(d.last_seen)),
    ` (every ${duration(d.expected_interval_s)})`));
  const more = counts.offline + counts.late - silent.length;
  if (more > 0) rows.push(el("li", { class: "note" }, `and ${more} more (cityvitals devices liveness, or GET /liveness/devices)`));
  $("#silent").replaceChildren(...rows);
  $("#no-silent").hidden = rows.length + outages.length > 0;
}

// --- the map: places from their coordinates, incidents on them; no tiles from the internet --

// A place's [lat, lon]: its own, else the mean of its devices' (the server's `positions`).
function position(place) {
  if (place.lat !== null && place.lon !== null) return [place.lat, place.lon];
  return (state.config.positions || {})[place.place_id] || null;
}

// Where an incident's place is on the map: its position, else its nearest ancestor's.
function located(placeId) {
  let place = state.places.get(placeId);
  while (place) {
    const at = position(place);
    if (at) return at;
    place = state.places.get(place.path[place.path.length - 2]);
  }
  return null;
}

function projection() {
  const placed = [...state.places.values()].map(position).filter((p) => p);
  if (!placed.length) return null;
  const lats = placed.map((p) => p[0]), lons = placed.map((p) => p[1]);
  const south = Math.min(...lats), north = Math.max(...lats);
  const west = Math.min(...lons), east = Math.max(...lons);
  const kx = Math.cos(((south + north) / 2) * Math.PI / 180);  // equirectangular
  const width = Math.max((east - west) * kx, 1e-4), height = Math.max(north - south, 1e-4);
  const scale = Math.min(380 / width, 280 / height);
  return (lat, lon) => [
    10 + ((lon - west) * kx) * scale + (380 - width * scale) / 2,
    10 + (north - lat) * scale + (280 - height * scale) / 2,
  ];
}

function drawMap() {
  const map = $("#map");
  map.replaceChildren(svg("g", { id: "map-places" }), svg("g", { id: "map-markers" }));
  const at = projection();
  if (!at) {
    $("#unmapped").textContent = "no place has coordinates";
    return;
  }
  const layer = $("#map-places");
  const boxes = [];  // the labels drawn: one that would overlap them is left out
  let cities = 0;  // a city's label is the map's caption, in its corner: its centre is a district's
  // Cities first, then districts by name: which label gives way does not depend on load order.
  const rank = (p) => (p.level === "city" ? 0 : 1);
  const places = [...state.places.values()].sort(
    (a, b) => rank(a) - rank(b) || String(a.name).localeCompare(String(b.name)));
  for (const place of places) {
    if (place.lat === null || place.lon === null) continue;
    const [x, y] = at(place.lat, place.lon);
    const big = place.level === "city" || place.level === "district";
    const dot = svg("circle", {
      cx: x, cy: y, r: big ? 3 : 1.2, class: `place ${place.level}`, "data-place-id": place.place_id,
    });
    const name = svg("title");  // a dot whose label gave way still says whose it is
    name.textContent = named(place);
    dot.append(name);
    layer.append(dot);
    if (!big) continue;
    const city = place.level === "city";
    const [lx, ly] = city ? [4, 10 + 9 * cities++] : [x, y];
    const right = !city && lx > 300;  // near the right edge: the label goes to the left of the dot
    const width = 6 * String(place.name).length, left = right ? lx - 4 - width : lx + 4;
    const box = [left, ly - 13, left + width, ly - 1];
    if (boxes.some((b) => box[0] < b[2] && b[0] < box[2] && box[1] < b[3] && b[1] < box[3])) continue;
    boxes.push(box);
    const label = svg("text", {
      x: right ? lx - 4 : lx + 4, y: ly - 3 + (city ? 3 : 0), class: `label${city ? " caption" : ""}`,
      "text-anchor": right ? "end" : "start", "data-place-id": place.place_id,
    });
    label.textContent = place.name;
    layer.append(label);
  }
}

function drawMarkers() {
  const layer = $("#map-markers");
  if (!layer) return;
  const at = projection();
  const missing = [];
  layer.replaceChildren();
  const shown = [], sharing = new Map();
  for (const incident of state.incidents.values()) {
    if (incident.state === "closed") continue;
    const where = located(incident.place_id);
    if (!at || !where) {
      missing.push(incident.place_id);
      continue;
    }
    const [x, y] = at(...where);
    const key = `${Math.round(x)},${Math.round(y)}`;
    shown.push([incident, x, y, key]);
    sharing.set(key, (sharing.get(key) || 0) + 1);
  }
  // Incidents at one point fan out around it, each its own marker to click.
  const placed = new Map();
  for (const [incident, px, py, key] of shown) {
    const n = sharing.get(key), k = placed.get(key) || 0;
    placed.set(key, k + 1);
    const angle = (2 * Math.PI * k) / n;
    const [x, y] = n > 1 ? [px + 7 * Math.cos(angle), py + 7 * Math.sin(angle)] : [px, py];
    const marker = svg("circle", {
      cx: x, cy: y, r: 5, class: `marker ${incident.level}`, "data-incident-id": incident.incident_id,
    });
    const title = svg("title");
    title.textContent = `${incident.level} ${incident.category} at ${incident.place_id}: ${incident.state}`;
    marker.append(title);
    marker.addEventListener("click", () => select(incident.incident_id));
    layer.append(marker);
  }
  $("#unmapped").textContent = missing.length
    ? `not on the map (no coordinates): ${[...new Set(missing)].join(", ")}` : "";
  drawLegend(shown.map(([incident]) => incident.level));
}

// What the map's colours and dots mean, with how many incidents of each level it shows.
function drawLegend(levels) {
  // a dot and its words never part at a line's end
  const key = (cls, mark, text) => [" ", el("span", { class: "entry" }, el("span", { class: `key ${cls}` }, mark), ` ${text}`)];
  $("#map-legend").replaceChildren(...[
    "open incidents on the map:",
    [...LEVELS].reverse().map((l) => key(l, "●", `${levels.filter((v) => v === l).length} ${l}`)),
    " · places:",
    key("district", "●", "district"),
    key("place", "•", "street, grid, building"),
  ].flat(Infinity));
}

boot();
