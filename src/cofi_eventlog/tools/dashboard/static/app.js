// The dashboard's only script. It draws the page from the JSON API and sets every stored text
// (batch ids, file names, messages, payloads) as text, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#558b2f", "#ad1457", "#4e342e", "#37474f"];
const SEGMENTS = [["completed", "completed"], ["failed", "failed"], ["in_flight", "in flight"], ["waiting", "waiting"]];

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const num = (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"));
const utc = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) + " UTC" : "-");
const clock = (iso) => (iso ? iso.slice(11, 19) : "-");
const text = (v) => (v === null || v === undefined ? "-" : String(v));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const whole = Math.round(seconds), h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
}

const badge = (state, id) => el("span", { class: "state " + state.replace(" ", "-"), id }, state);

async function getJSON(path) {
  const started = performance.now();
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  return { status: response.status, body, took: performance.now() - started };
}

function setLive(message, down) {
  const live = document.getElementById("live");
  live.textContent = message;
  live.classList.toggle("down", Boolean(down));
}

// Poll a JSON address and redraw; the pause grows with the server's answer time, so a slow database
// is not asked more often than it can answer.
function follow(path, every, draw) {
  const tick = async () => {
    let pause = every;
    try {
      const { status, body, took } = await getJSON(path);
      draw(status, body);
      setLive(`updated ${clock(body.now || new Date().toISOString())} UTC · live`, false);
      pause = Math.max(every, took * 4);
    } catch (err) {
      setLive("connection lost, retrying", true);
    }
    setTimeout(tick, pause);
  };
  tick();
}

// ---- the list of recent batches ----

function progressBar(parts, total) {
  const sum = parts.reduce((a, [, v]) => a + v, 0);
  const width = Math.max(total || 0, sum) || 1;
  const bar = svg("svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img" });
  let x = 0;
  for (const [key, value] of parts) {
    if (!value) continue;
    const w = (100 * value) / width;
    bar.append(svg("rect", { class: "seg-" + key, x, y: 0, width: w, height: 10 }, svg("title", {}, `${key.replace("_", " ")}: ${num(value)}`)));
    x += w;
  }
  return bar;
}

function drawList(status, data) {
  const app = document.getElementById("app");
  if (status !== 200) { app.replaceChildren(el("p", { class: "error" }, text(data.error))); return; }
  document.getElementById("where").textContent = data.table;
  const recent = data.recent_errors;
  const rows = data.batches.map((b) => el("tr", { "data-batch": b.batch },
    el("td", { class: "text" }, el("a", { class: "batch", href: "/batches/" + encodeURIComponent(b.batch) }, b.batch)),
    el("td", {}, badge(b.state)),
    el("td", { class: "files" }, num(b.files)),
    el("td", { class: "bar" }, progressBar([["completed", b.progress_pct || 0], ["waiting", 100 - (b.progress_pct || 0)]], 100)),
    el("td", { class: "pct" }, b.progress_pct === null ? "-" : b.progress_pct.toFixed(1) + "%"),
    el("td", { class: "errors" }, num(b.errors)),
    el("td", { class: "in_flight" }, num(b.in_flight)),
    el("td", {}, utc(b.first_event)),
    el("td", {}, utc(b.last_event), el("div", { class: "muted" }, duration(b.quiet_seconds) + " ago"))));
  app.replaceChildren(
    el("h1", {}, "Recent batches"),
    el("p", { class: "summary" }, "Errors in the last 15 minutes, all batches: ", el("b", { id: "recent-errors" }, num(recent.errors)),
      recent.batches.length ? " — " : "",
      recent.batches.slice(0, 8).map((b, i) => [i ? ", " : "", el("a", { href: "/batches/" + encodeURIComponent(b.batch) }, b.batch), ` (${num(b.errors)})`])),
    el("section", {}, el("table", { id: "batches" },
      el("thead", {}, el("tr", {}, ["batch", "state", "files", "progress", "", "errors", "in flight", "first event", "last event"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { class: "muted" }, "no batches yet"))))));
}

// ---- one batch ----

const openGroups = new Set();
const payloads = new Map();

function stagesTable(data) {
  const rows = data.stages.map((s) => el("tr", { "data-stage": s.stage },
    el("td", { class: "text stage" }, s.stage),
    el("td", {}, badge(s.state)),
    el("td", { class: "bar" }, progressBar(SEGMENTS.map(([k]) => [k, s[k]]), s.total)),
    el("td", { class: "total", title: "from " + s.total_from }, num(s.total)),
    SEGMENTS.map(([k]) => el("td", { class: k }, num(s[k]))),
    el("td", { class: "pct" }, s.progress_pct === null ? "-" : s.progress_pct.toFixed(1) + "%"),
    el("td", {}, clock(s.first_event)),
    el("td", {}, clock(s.end)),
    el("td", {}, duration(s.seconds)),
    el("td", {}, num(s.files_per_minute)),
    el("td", { class: "eta" }, s.eta_seconds === null ? "-" : duration(s.eta_seconds))));
  return el("section", { id: "stages" }, el("h2", {}, "Stages"),
    el("table", {}, el("thead", {}, el("tr", {}, ["stage", "state", "progress", "files", "completed", "failed", "in flight",
      "waiting", "done", "start UTC", "end UTC", "duration", "files/min", "ETA"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    el("p", { class: "legend" }, SEGMENTS.map(([k, label]) => el("span", {}, el("i", { class: k }), label))));
}

function chart(data) {
  const c = data.chart, W = 1000, left = 110, right = 16, rowH = 18;
  const start = Date.parse(c.start), slotMs = c.slot_seconds * 1000;
  const end = Math.max(start + c.slots * slotMs, Date.parse(data.last_event), data.state === "running" ? Date.parse(data.now) : 0);
  const x = (t) => left + ((t - start) / Math.max(1, end - start)) * (W - left - right);
  const color = (i) => PALETTE[i % PALETTE.length];
  const stages = data.stages.map((s) => s.stage);
  const perMinute = 60 / c.slot_seconds;
  const timelineH = stages.length * rowH + 8, chartTop = timelineH + 14, chartH = 150, errTop = chartTop + chartH + 22, errH = 46;
  const H = errTop + errH + 24;
  const out = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  data.stages.forEach((s, i) => {
    const y = i * rowH + 4, x0 = x(Date.parse(s.first_event)), x1 = x(Date.parse(s.end || data.now));
    out.append(svg("text", { x: left - 8, y: y + 12, "text-anchor": "end" }, s.stage),
      svg("rect", { x: x0, y, width: Math.max(2, x1 - x0), height: rowH - 6, fill: color(i), opacity: 0.75 },
        svg("title", {}, `${s.stage}: ${utc(s.first_event)} – ${s.end ? utc(s.end) : "now"}`)));
  });
  const series = c.series.filter((s) => s.stage !== null);
  const peak = Math.max(1, ...series.flatMap((s) => s.completed.map((v) => v * perMinute)));
  const errors = Array.from({ length: c.slots }, (_, k) => c.series.reduce((a, s) => a + s.errors[k], 0) * perMinute);
  const errPeak = Math.max(1, ...errors);
  const slotX = (k) => x(start + (k + 0.5) * slotMs);
  out.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: chartTop, y2: chartTop }),
    svg("line", { class: "grid", x1: left, x2: W - right, y1: chartTop + chartH, y2: chartTop + chartH }),
    svg("text", { x: left - 8, y: chartTop + 10, "text-anchor": "end" }, `${num(Math.round(peak))}/min`),
    svg("text", { x: left - 8, y: chartTop + chartH, "text-anchor": "end" }, "completed 0"));
  series.forEach((s) => {
    const i = stages.indexOf(s.stage);
    const points = s.completed.map((v, k) => `${slotX(k).toFixed(1)},${(chartTop + chartH - (v * perMinute / peak) * chartH).toFixed(1)}`);
    out.append(svg("polyline", { points: points.join(" "), stroke: color(i) }, svg("title", {}, `${s.stage}: completions per minute`)));
  });
  out.append(svg("line", { class: "grid", x1: left, x2: W - right, y1: errTop + errH, y2: errTop + errH }),
    svg("text", { x: left - 8, y: errTop + 10, "text-anchor": "end" }, `errors ${num(Math.round(errPeak))}/min`));
  const barW = Math.max(1, x(start + slotMs) - x(start) - 1);
  errors.forEach((v, k) => {
    if (!v) return;
    const h = (v / errPeak) * errH;
    out.append(svg("rect", { class: "err", x: slotX(k) - barW / 2, y: errTop + errH - h, width: barW, height: h },
      svg("title", {}, `${utc(new Date(start + k * slotMs).toISOString())}: ${num(v)} errors/min — ` +
        c.series.filter((s) => s.errors[k]).map((s) => `${s.stage === null ? "no stage" : s.stage} ${num(s.errors[k] * perMinute)}`).join(", "))));
  });
  for (let k = 0; k <= 5; k++) {
    const t = start + ((end - start) * k) / 5;
    out.append(svg("text", { x: x(t), y: H - 6, "text-anchor": k === 0 ? "start" : k === 5 ? "end" : "middle" },
      new Date(t).toISOString().slice(11, end - start < 600000 ? 19 : 16) + (k === 0 ? " UTC" : "")));
  }
  const legend = el("p", { class: "legend" }, stages.map((name, i) => el("span", {}, svgSwatch(color(i)), name)),
    el("span", {}, svgSwatch("#c62828"), "errors (all stages)"));
  const unit = c.slot_seconds === 60 ? "per minute" : `per minute, in slots of ${duration(c.slot_seconds)}`;
  return el("section", { id: "chart" }, el("h2", {}, `Timeline, completions and errors ${unit} (UTC)`), out, legend);
}

function svgSwatch(fill) {
  return svg("svg", { width: 10, height: 10, viewBox: "0 0 10 10" }, svg("rect", { width: 10, height: 10, fill }));
}

function gpusTable(data) {
  const rows = data.gpus.map((g) => el("tr", { "data-gpu": g.gpu },
    el("td", { class: "text" }, g.gpu),
    el("td", { class: "events" }, num(g.events)),
    el("td", { class: "completed" }, num(g.completed)),
    el("td", { class: "failed" }, num(g.failed)),
    el("td", {}, num(g.files_per_minute)),
    el("td", {}, utc(g.last_seen)),
    el("td", { class: "text" }, g.quiet ? el("span", { class: "quiet" }, `quiet for ${duration(g.quiet_seconds)}`) : "")));
  return el("section", { id: "gpus" }, el("h2", {}, "GPUs"), rows.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["gpu", "events", "completed", "failed", "files/min", "last seen", ""].map((h) => el("th", {}, h)))), el("tbody", {}, rows))
    : el("p", { class: "muted" }, "no GPU recorded"));
}

function payloadView(batch, example) {
  const box = el("div", { class: "payload-box" });
  const shown = payloads.get(example.event_id);
  if (shown !== undefined) {
    box.append(el("pre", { class: "payload" }, shown));
    return box;
  }
  box.append(el("button", { class: "payload", type: "button", on: { click: async () => {
    const { status, body } = await getJSON(`/api/batches/${encodeURIComponent(batch)}/events/${example.event_id}`);
    const value = status === 200 ? JSON.stringify(body.metadata, null, 2) : text(body.error);
    payloads.set(example.event_id, value);
    box.replaceChildren(el("pre", { class: "payload" }, value));
  } } }, "payload and traceback"));
  return box;
}

function errorsSection(data) {
  const key = (g) => [g.stage, g.type, g.shape].join("\u0000");
  const groups = data.error_groups.map((g) => {
    const node = el("details", { "data-key": key(g), open: openGroups.has(key(g)) },
      el("summary", {}, el("span", { class: "count" }, num(g.count)), el("b", { class: "stage" }, text(g.stage)), "  ",
        el("span", { class: "type" }, text(g.type)), "  ", el("span", { class: "shape" }, g.shape),
        el("span", { class: "muted" }, `  last ${clock(g.last)} UTC`)),
      g.examples.map((e) => el("div", { class: "example" },
        el("div", { class: "meta" }, el("span", { class: "file" }, text(e.file)), ` on ${text(e.gpu)} at ${utc(e.at)}`),
        el("pre", { class: "message" }, e.message), payloadView(data.batch, e))));
    node.addEventListener("toggle", () => (node.open ? openGroups.add(key(g)) : openGroups.delete(key(g))));
    return node;
  });
  const sampled = data.errors_grouped < data.errors ? ` (the newest ${num(data.errors_grouped)} grouped)` : "";
  return el("section", { id: "errors" }, el("h2", {}, `Errors: ${num(data.errors)}${sampled}, by stage, type and message`),
    groups.length ? groups : el("p", { class: "muted" }, "none"),
    data.error_groups_left_off ? el("p", { class: "muted" }, `${num(data.error_groups_left_off)} smaller groups not shown`) : null);
}

function drawBatch(batch, status, data) {
  const app = document.getElementById("app");
  if (status !== 200) {
    app.replaceChildren(el("h1", {}, "Batch ", batch), el("p", { class: "error" }, status === 404 ? "No events for this batch (yet)." : text(data.error)));
    return;
  }
  document.getElementById("where").textContent = data.table;
  document.title = `${data.batch} · ${data.state}`;
  const rate = data.migrated ? "history migrated from processing_logs" : data.events_per_second === null ? "" :
    `${num(data.events_per_second)} events/s, ${num(data.completions_per_minute)} completions/min`;
  app.replaceChildren(
    el("h1", {}, "Batch ", el("span", { id: "batch-id" }, data.batch), " ", badge(data.state, "state")),
    el("p", { class: "summary" },
      el("b", { id: "files", title: "from " + text(data.files_from) }, num(data.files)), " files · ", el("b", { id: "events" }, num(data.events)), " events · ",
      el("b", { id: "errors-total" }, num(data.errors)), " errors · ", el("b", { id: "progress" }, data.progress_pct === null ? "-" : data.progress_pct + "%"), " done"),
    el("p", { class: "summary" }, `first event ${utc(data.first_event)} · last ${utc(data.last_event)} (${duration(data.quiet_seconds)} ago) · ${rate}`),
    stagesTable(data), chart(data), gpusTable(data), errorsSection(data));
}

function start() {
  const path = location.pathname;
  if (path.startsWith("/batches/")) {
    const batch = decodeURIComponent(path.slice("/batches/".length));
    follow(`/api/batches/${encodeURIComponent(batch)}`, 2000, (status, body) => drawBatch(batch, status, body));
  } else {
    follow("/api/batches", 5000, drawList);
  }
}

start();
