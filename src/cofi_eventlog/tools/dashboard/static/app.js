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
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const num = (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"));
const whole = (v) => (v === null || v === undefined ? "-" : Math.round(v).toLocaleString("en-US"));
const utc = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) + " UTC" : "-");
const clock = (iso) => (iso ? iso.slice(11, 19) : "-");
const text = (v) => (v === null || v === undefined ? "-" : String(v));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const all = Math.round(seconds), d = Math.floor(all / 86400), h = Math.floor((all % 86400) / 3600);
  const m = Math.floor((all % 3600) / 60), s = all % 60;
  if (d) return `${d}d ${String(h).padStart(2, "0")}h`;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
}

const badge = (state, id) => el("span", { class: "state " + state.replaceAll(" ", "-"), id }, state);
const pctText = (v) => (v === null || v === undefined ? "-" : v.toFixed(1) + "%");

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
// is not asked more often than it can answer. While the database (503) or the dashboard does not answer,
// the figures drawn last stay, and the header says since when they are stale.
function follow(path, every, draw) {
  let shown = null, down = null;
  const stale = (why) => {
    down = down || new Date().toISOString();
    setLive(`${why} since ${clock(down)} UTC · figures from ${shown ? clock(shown) + " UTC" : "never"}, retrying`, true);
    document.body.classList.add("stale");
  };
  const tick = async () => {
    let pause = every;
    try {
      const { status, body, took } = await getJSON(path);
      pause = Math.max(every, took * 4);
      if (status === 503 && shown) {
        stale("database not answering");
      } else {
        draw(status, body);
        if (status === 503) { stale("database not answering"); } else {
          shown = body.now || new Date().toISOString();
          down = null;
          document.body.classList.remove("stale");
          setLive(`updated ${clock(shown)} UTC · live`, false);
        }
      }
    } catch (err) {
      stale("dashboard not answering");
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
    el("td", { class: "pct", title: "of the " + b.progress_of }, pctText(b.progress_pct),
      b.progress_of === "stages so far" && b.state !== "completed" ? el("div", { class: "muted" }, "stages so far") : null),
    el("td", { class: "errors" }, num(b.errors)),
    el("td", { class: "in_flight" }, num(b.in_flight)),
    el("td", {}, utc(b.first_event)),
    el("td", {}, utc(b.last_event), el("div", { class: "muted" }, duration(b.quiet_seconds) + " ago"))));
  app.replaceChildren(
    el("h1", {}, "Recent batches"),
    el("p", { class: "summary", id: "recent-line" }, "Errors in the last 15 minutes, all batches: ",
      el("b", { id: "recent-errors" }, (recent.errors_more ? "more than " : "") + num(recent.errors)),
      recent.batches.length ? " — " : "",
      recent.batches.slice(0, 8).map((b, i) => [i ? ", " : "", el("a", { href: "/batches/" + encodeURIComponent(b.batch) }, b.batch), ` (${num(b.errors)})`]),
      recent.sampled < recent.errors ? ` (per batch: the newest ${num(recent.sampled)})` : ""),
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
    el("td", { class: "pct" }, pctText(s.progress_pct)),
    el("td", {}, clock(s.first_event)),
    el("td", { class: "end" }, clock(s.end)),
    el("td", {}, duration(s.seconds)),
    el("td", { class: "rate", title: "average; recent: " + whole(s.recent_files_per_minute) }, whole(s.files_per_minute)),
    el("td", { class: "eta" }, s.no_progress_seconds !== null
      ? el("span", { class: "alarm" }, `no progress for ${duration(s.no_progress_seconds)}`)
      : s.eta_seconds === null ? "-" : duration(s.eta_seconds))));
  const of = data.progress_of === "declared stages" ? "the stages it declared" :
    "the stages so far (it declared none: more may follow)";
  return el("section", { id: "stages" }, el("h2", {}, "Stages ", el("span", { class: "muted", id: "progress-of" }, "— " + of)),
    el("table", {}, el("thead", {}, el("tr", {}, ["stage", "state", "progress", "files", "completed", "failed", "in flight",
      "waiting", "done", "start UTC", "end UTC", "duration", "files/min", "ETA"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    el("p", { class: "legend" }, SEGMENTS.map(([k, label]) => el("span", {}, el("i", { class: k }), label))));
}

function chart(data) {
  const c = data.chart, W = 1000, left = 110, right = 16, rowH = 18;
  const start = Date.parse(c.start), slotMs = c.slot_seconds * 1000;
  const done = data.state === "completed" || data.state === "migrated";  // else the axis runs to now: a silence shows
  const end = Math.max(start + c.slots * slotMs, Date.parse(data.last_event), done ? 0 : Date.parse(data.now));
  const x = (t) => left + ((t - start) / Math.max(1, end - start)) * (W - left - right);
  const color = (i) => PALETTE[i % PALETTE.length];
  const begun = data.stages.filter((s) => s.first_event !== null);
  const stages = begun.map((s) => s.stage);
  const perMinute = 60 / c.slot_seconds;
  const timelineH = Math.max(1, stages.length) * rowH + 8, chartTop = timelineH + 14, chartH = 150, errTop = chartTop + chartH + 22, errH = 46;
  const H = errTop + errH + 24;
  const out = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  begun.forEach((s, i) => {
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
    if (points.length === 1) {  // one slot: a line of one point draws nothing
      const [px, py] = points[0].split(",");
      out.append(svg("circle", { cx: px, cy: py, r: 4, fill: color(i) }, svg("title", {}, `${s.stage}: ${num(s.completed[0] * perMinute)}/min`)));
    }
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
  const rows = data.gpus.map((g) => el("tr", { "data-gpu": g.gpu, class: g.stuck ? "stuck" : null },
    el("td", { class: "text" }, g.gpu),
    el("td", { class: "gpu-state" }, badge(g.state)),
    el("td", { class: "in_flight" }, num(g.in_flight)),
    el("td", { class: "text current" }, g.current ? [el("span", { class: "file" }, g.current.file), el("span", { class: "muted" }, ` in ${text(g.current.stage)} `),
      el("span", { class: g.stuck ? "age alarm" : "age" }, `for ${duration(g.oldest_in_flight_seconds)}`)] : ""),
    el("td", { class: "events" }, num(g.events)),
    el("td", { class: "completed" }, num(g.completed)),
    el("td", { class: "failed" }, num(g.failed)),
    el("td", {}, whole(g.files_per_minute)),
    el("td", {}, utc(g.last_seen))));
  return el("section", { id: "gpus" }, el("h2", {}, "GPUs"), rows.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["gpu", "state", "in flight", "current file (oldest open for)", "events", "completed", "failed", "files/min", "last seen"].map((h) => el("th", {}, h)))), el("tbody", {}, rows))
    : el("p", { class: "muted" }, "no GPU recorded"));
}

// An event's metadata: its traceback as lines (not a JSON string of \n), the rest as JSON.
function metadataView(value) {
  if (!value || typeof value !== "object" || Array.isArray(value) || typeof value.traceback !== "string") {
    return [el("pre", { class: "payload" }, typeof value === "string" ? value : JSON.stringify(value, null, 2))];
  }
  const { traceback, ...rest } = value;
  return [el("pre", { class: "payload" }, JSON.stringify(rest, null, 2)), el("pre", { class: "traceback" }, traceback)];
}

function payloadView(batch, example) {
  const box = el("div", { class: "payload-box" });
  const shown = payloads.get(example.event_id);
  if (shown !== undefined) {
    box.append(...shown);
    return box;
  }
  box.append(el("button", { class: "payload", type: "button", on: { click: async () => {
    const { status, body } = await getJSON(`/api/batches/${encodeURIComponent(batch)}/events/${example.event_id}`);
    const nodes = status === 200 ? metadataView(body.metadata) : [el("pre", { class: "payload" }, text(body.error))];
    payloads.set(example.event_id, nodes);
    box.replaceChildren(...nodes);
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
  const csv = `/api/batches/${encodeURIComponent(data.batch)}/failed.csv`;
  return el("section", { id: "errors" }, el("h2", {}, `Errors: ${num(data.errors)}${sampled}, by stage, type and message`),
    data.errors ? el("p", {}, el("a", { id: "failed-csv", href: csv, download: "" }, "failed files (CSV: file, stage, GPU, time, error type, message)"),
      el("span", { class: "muted" }, " — every file whose latest attempt failed, to export or retry")) : null,
    groups.length ? groups : el("p", { class: "muted" }, "none"),
    data.error_groups_left_off ? el("p", { class: "muted" }, `${num(data.error_groups_left_off)} smaller groups not shown`) : null);
}

const NOTES = {
  "stalled": (d) => `No event for ${duration(d.quiet_seconds)} (more than --quiet-after ${duration(d.quiet_after)}) with work left.`,
  "ended short": (d) => d.events_by_type.batch_complete ? "It logged batch_complete with work left." :
    `No event for ${duration(d.quiet_seconds)} with work left: the process that ran it is gone.`,
  "unconfirmed": (d) => `No event for ${duration(d.quiet_seconds)}; every file seen has an outcome, but the batch declared no ` +
    "stages and never logged batch_complete: nothing says it finished.",
};

function stateNote(data) {
  const note = NOTES[data.state];
  return note ? el("p", { class: "note " + data.state.replaceAll(" ", "-"), id: "state-note" }, note(data)) : null;
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
    `${num(data.events_per_second)} events/s, ${whole(data.completions_per_minute)} completions/min`;
  app.replaceChildren(
    el("h1", {}, "Batch ", el("span", { id: "batch-id" }, data.batch), " ", badge(data.state, "state")),
    el("p", { class: "summary" },
      el("b", { id: "files", title: "from " + text(data.files_from) }, num(data.files)), " files · ", el("b", { id: "events" }, num(data.events)), " events · ",
      el("b", { id: "errors-total" }, num(data.errors)), " errors · ", el("b", { id: "progress" }, pctText(data.progress_pct)),
      ` done, of the ${data.progress_of}`),
    el("p", { class: "summary" }, `first event ${utc(data.first_event)} · last ${utc(data.last_event)} (${duration(data.quiet_seconds)} ago) · ${rate}`),
    ...[stateNote(data)].filter(Boolean),
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
