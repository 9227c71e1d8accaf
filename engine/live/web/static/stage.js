// The stage page. Controls are built from the engine's OSC address table (the "hello"
// frame); every touch is sent as the OSC message a tablet would send. The engine's frames
// replace what is shown; the page draws the bar's beat between frames from the tempo.
"use strict";

const PART_COLOURS = { melody: "#f2b134", bass: "#4cc38a", drums: "#b88cff", chords: "#6ab0ff" };
const LANDS = { now: "now", beat: "next beat", bar: "next bar" };
const SEND_GAP_MS = 33;        // a fader sends at most ~30 times a second
const QUIET_MS = 3000;         // no frame this long: the connection is gone
const HOLD_MS = 600;           // a control just touched is not moved by the engine
const $ = (id) => document.getElementById(id);

const page = {
  ws: null, controls: new Map(), state: null, roll: null, stateAt: 0,
  lastFrameAt: 0, retryMs: 500, ended: false, pin: "", touched: new Map(),
};

// ---- connection -------------------------------------------------------------------
function readPin() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("pin");
  if (fromUrl !== null) {
    sessionStorage.setItem("encore-pin", fromUrl);
    url.searchParams.delete("pin");            // keep the PIN out of the address bar
    history.replaceState(null, "", url.pathname + url.search);
  }
  return sessionStorage.getItem("encore-pin") || "";
}

function banner(text, kind) {
  const el = $("banner");
  el.textContent = text;
  el.className = "banner " + kind;
  $("stage").classList.toggle("offline", kind !== "ok");
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let ws;
  try {
    ws = new WebSocket(scheme + location.host + "/ws");
  } catch (err) {
    retry();
    return;
  }
  page.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "hello", pin: page.pin }));
  };
  ws.onmessage = (event) => {
    page.lastFrameAt = performance.now();
    let frame;
    try { frame = JSON.parse(event.data); } catch (err) { return; }
    if (frame.type === "hello") onHello(frame);
    else if (frame.type === "state") onState(frame);
    else if (frame.type === "roll") { page.roll = frame; }
  };
  ws.onclose = (event) => {
    if (page.ws !== ws) return;
    page.ws = null;
    if (event.code === 4003) {          // wrong or missing PIN
      sessionStorage.removeItem("encore-pin");
      askPin(page.pin ? "Wrong PIN." : "");
      return;
    }
    if (event.code === 4029) banner("Too many wrong PINs: wait a minute.", "gone");
    else if (event.code === 1001) { page.ended = true; banner("The set has ended. Waiting for the next one…", "ended"); }
    else banner("Engine gone: no connection. Reconnecting…", "gone");
    retry();
  };
}

function retry() {
  const wait = page.retryMs;
  page.retryMs = Math.min(page.retryMs * 2, 5000);
  setTimeout(connect, wait);
}

function askPin(error) {
  $("pin-error").textContent = error;
  $("pin-form").classList.remove("hidden");
  $("stage").classList.add("hidden");
  banner("The stage page needs its PIN.", "gone");
  $("pin").focus();
}

$("pin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  page.pin = $("pin").value.trim();
  sessionStorage.setItem("encore-pin", page.pin);
  $("pin-form").classList.add("hidden");
  $("stage").classList.remove("hidden");
  connect();
});

// A phone that walks out of Wi-Fi keeps a dead socket "open": frames stop, so reconnect.
setInterval(() => {
  if (page.ws && page.ws.readyState === WebSocket.OPEN &&
      performance.now() - page.lastFrameAt > QUIET_MS) {
    banner("Engine gone: no frames for " + Math.round(QUIET_MS / 1000) + " s. Reconnecting…", "gone");
    const ws = page.ws;
    page.ws = null;
    ws.close();
    retry();
  }
}, 1000);

function send(address, args) {
  if (!page.ws || page.ws.readyState !== WebSocket.OPEN) return false;
  page.ws.send(JSON.stringify({ type: "osc", address, args }));
  return true;
}

// ---- the controls, from the OSC table --------------------------------------------------
function onHello(frame) {
  page.retryMs = 500;
  page.ended = false;
  banner("", "ok");
  $("title").textContent = frame.title;
  document.title = frame.title + " · Encore stage";
  if (page.controls.size === 0) buildControls(frame.controls, frame.parts);
  $("legend").innerHTML = frame.parts.map((p) =>
    `<span><i class="sw-${p}"></i>${p}</span>`).join("");
}

function groupOf(address) {
  if (/^\/encore\/part\//.test(address)) return "Parts";
  if (/^\/encore\/(walk|xy)/.test(address)) return "Walk";
  if (/^\/encore\/(lyrics|voice)/.test(address)) return "Voice and lyrics";
  if (/^\/encore\/(master|panic)/.test(address)) return "Master";
  if (/^\/encore\/(status|hello)$/.test(address)) return "Engine";
  return "Song";
}

function nameOf(address) {
  const words = address.replace(/^\/encore\//, "").split("/");
  if (words[0] === "part") return words[2];
  if (words[0] === "section") return words[1] + " section";
  return words.filter((w) => w !== "walk").join(" ") || words.join(" ");
}

function slug(address) { return address.replace(/^\//, "").replace(/\//g, "-"); }

function buildControls(controls, parts) {
  const root = $("controls");
  root.innerHTML = "";
  const groups = new Map();
  const group = (name) => {
    if (!groups.has(name)) {
      const el = document.createElement("div");
      el.className = "group";
      el.innerHTML = `<h2>${name}</h2>`;
      groups.set(name, el);
    }
    return groups.get(name);
  };
  for (const name of ["Song", "Walk", "Parts", "Voice and lyrics", "Master", "Engine"]) group(name);
  const partRows = new Map(parts.map((p) => {
    const row = document.createElement("div");
    row.className = "part";
    row.innerHTML = `<span><i class="swatch sw-${p}"></i>${p}</span>`;
    group("Parts").appendChild(row);
    return [p, row];
  }));
  for (const c of controls) {
    if (!c.input) continue;
    const el = makeControl(c);
    const m = c.address.match(/^\/encore\/part\/([^/]+)\//);
    if (m && partRows.has(m[1])) partRows.get(m[1]).append(...(c.widget === "fader" ? faderCells(el) : [el]));
    else group(groupOf(c.address)).appendChild(el);
  }
  for (const el of groups.values()) root.appendChild(el);
}

function faderCells(el) {               // a part's level fader in the part's row
  el.querySelector(".name").remove();
  return [el];
}

function landsBadge(c) {
  return `<span class="lands" title="${c.help.replace(/"/g, "&quot;")}">${LANDS[c.lands] || c.lands}</span>`;
}

function makeControl(c) {
  const el = document.createElement("div");
  el.className = "control " + c.widget + (c.widget === "xy" ? " xy-box" : "");
  el.id = "c-" + slug(c.address);
  el.dataset.address = c.address;
  el.title = c.help;
  const entry = { c, el, set: () => {} };
  page.controls.set(c.address, entry);
  if (c.widget === "fader") {
    const [lo, hi] = c.ranges[0];
    const step = c.types === "i" ? 1 : (hi - lo) / 1000;
    el.innerHTML = `<span class="name">${nameOf(c.address)}${landsBadge(c)}</span>` +
      `<input type="range" min="${lo}" max="${hi}" step="${step}" aria-label="${nameOf(c.address)}"><output></output>`;
    const input = el.querySelector("input");
    const out = el.querySelector("output");
    const digits = hi - lo >= 20 ? 1 : 2;
    let timer = null, sent = null;
    const sendValue = () => {
      const value = Number(input.value);
      if (value !== sent && send(c.address, [value])) sent = value;
    };
    input.addEventListener("input", () => {
      out.textContent = Number(input.value).toFixed(digits);
      page.touched.set(c.address, performance.now());
      if (timer) return;
      timer = setTimeout(() => { timer = null; sendValue(); }, SEND_GAP_MS);
    });
    input.addEventListener("change", sendValue);
    entry.set = (v) => { input.value = v; out.textContent = Number(v).toFixed(digits); };
  } else if (c.widget === "toggle") {
    el.innerHTML = `<button class="toggle" aria-pressed="false">${nameOf(c.address)}</button>${landsBadge(c)}`;
    const button = el.querySelector("button");
    button.addEventListener("click", () => {
      const on = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", String(on));
      page.touched.set(c.address, performance.now());
      send(c.address, [on ? 1 : 0]);
    });
    entry.set = (v) => button.setAttribute("aria-pressed", String(Number(v) === 1));
  } else if (c.widget === "button") {
    el.innerHTML = `<button class="${c.address.endsWith("/panic") ? "panic" : ""}">${nameOf(c.address)}</button>${landsBadge(c)}`;
    el.querySelector("button").addEventListener("click", () => send(c.address, []));
  } else if (c.widget === "xy") {
    el.innerHTML = `<span class="name">x/y pad${landsBadge(c)}</span><canvas class="xy" aria-label="x/y pad"></canvas>`;
    const canvas = el.querySelector("canvas");
    entry.canvas = canvas;
    entry.value = [0.5, 0.5];
    let timer = null, down = false;
    const move = (event) => {
      const r = canvas.getBoundingClientRect();
      const x = Math.min(Math.max((event.clientX - r.left) / r.width, 0), 1);
      const y = Math.min(Math.max(1 - (event.clientY - r.top) / r.height, 0), 1);
      entry.value = [x, y];
      page.touched.set(c.address, performance.now());
      if (!timer) timer = setTimeout(() => { timer = null; send(c.address, entry.value); }, SEND_GAP_MS);
    };
    canvas.addEventListener("pointerdown", (e) => { down = true; canvas.setPointerCapture(e.pointerId); move(e); });
    canvas.addEventListener("pointermove", (e) => { if (down) move(e); });
    const up = () => { if (down) { down = false; send(c.address, entry.value); } };
    canvas.addEventListener("pointerup", up);
    canvas.addEventListener("pointercancel", up);
    entry.set = (v) => { entry.value = v; };
  } else {                                 // text, radio: a word sent on Enter
    el.innerHTML = `<span class="name">${nameOf(c.address)}</span><input type="text" maxlength="64" enterkeyhint="send">` +
      `<button>set</button>${landsBadge(c)}`;
    const input = el.querySelector("input");
    const go = () => { if (input.value.trim()) send(c.address, [input.value.trim()]); };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    input.addEventListener("focus", () => page.touched.set(c.address, performance.now() + 1e9));
    input.addEventListener("blur", () => page.touched.set(c.address, performance.now()));
    el.querySelector("button").addEventListener("click", go);
    entry.set = (v) => { input.value = v; };
  }
  return el;
}

// ---- frames in -----------------------------------------------------------------------
function onState(s) {
  page.state = s;
  page.stateAt = performance.now();
  $("bpm").textContent = s.bpm.toFixed(1);
  $("section").textContent = s.section || "–";
  $("in-section").textContent = s.section_bars ? `${s.bar_in_section} / ${s.section_bars}` : "–";
  $("next-section").textContent = s.next_section || "–";
  $("pass").textContent = s.pass || "–";
  $("lyric-now").textContent = s.lyric_now || "\u00a0";
  $("lyric-next").textContent = s.lyric_next ? "next: " + s.lyric_next : "\u00a0";
  $("clients").textContent = s.clients === 1 ? "1 page" : `${s.clients} pages`;
  $("sync").textContent = s.sync;
  const form = $("form");
  const key = JSON.stringify(s.form);
  if (form.dataset.key !== key) {
    form.dataset.key = key;
    form.innerHTML = s.form.map(([name, bars]) => `<li>${name} <small>${bars}</small></li>`).join("");
  }
  [...form.children].forEach((li, i) => li.classList.toggle("current", i === s.section_index));
  const now = performance.now();
  for (const [address, value] of Object.entries(s.values)) {
    const entry = page.controls.get(address);
    if (!entry) continue;
    if (now - (page.touched.get(address) || -1e9) > HOLD_MS) entry.set(value);
  }
  const pad = page.controls.get("/encore/xy");   // the pad's point is not a table value
  if (pad && now - (page.touched.get("/encore/xy") || -1e9) > HOLD_MS) pad.set(s.xy);
  const waiting = new Set(s.pending.map((p) => p.address));
  for (const [address, entry] of page.controls) entry.el.classList.toggle("waiting", waiting.has(address));
  const h = s.health;
  const item = (label, n, bad) => `<span class="${bad ? "bad" : "good"}">${label} ${n}</span>`;
  $("health").innerHTML = [
    item("underruns", h.underruns, h.underruns > 0),
    item("late", h.late, h.late > 0),
    item("bars replaced", h.fallbacks, h.fallbacks > 0),
    item("phrases missed", h.phrases_missed, h.phrases_missed > 0),
    item("ports lost", h.ports_lost, h.ports_gone.length > 0),
  ].join("") + (h.ports_gone.length ? `<span class="bad">gone: ${h.ports_gone.join(", ")}</span>` : "");
}

function beatNow() {                     // the engine's beat, carried on by the tempo
  const s = page.state;
  if (!s || !s.started) return null;
  return s.position + (performance.now() - page.stateAt) / 1000 * s.bpm / 60;
}

// ---- drawing -----------------------------------------------------------------------
function fit(canvas) {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return [w, h, dpr];
}

function drawRoll() {
  const canvas = $("roll");
  const [w, h, dpr] = fit(canvas);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  const beat = beatNow();
  const roll = page.roll;
  if (!roll || beat === null) return;
  const before = 6 * 4, after = 2.5 * 4;             // beats shown before and after now
  const x = (b) => (b - (beat - before)) / (before + after) * w;
  const drumH = h * 0.18, noteH = h - drumH;
  const lo = 28, hi = 96;
  const y = (pitch) => noteH - (Math.min(Math.max(pitch, lo), hi) - lo) / (hi - lo) * (noteH - 4) - 2;
  for (const bar of roll.bars) {
    const b0 = bar.index * 4;
    g.fillStyle = bar.played ? "rgba(255,255,255,0.04)" : "rgba(106,176,255,0.07)";
    g.fillRect(x(b0), 0, x(b0 + 4) - x(b0) - 1, h);
    g.fillStyle = "#56616d";
    g.font = `${11 * dpr}px system-ui`;
    g.fillText(`${bar.index + 1} ${bar.section}`, x(b0) + 3 * dpr, 12 * dpr);
    for (const [part, notes] of Object.entries(bar.notes)) {
      g.globalAlpha = bar.muted.includes(part) ? 0.2 : bar.played ? 0.95 : 0.5;
      g.fillStyle = PART_COLOURS[part] || "#ccc";
      for (const [pitch, start, end] of notes) {
        const xs = x(b0 + start / 4), xe = x(b0 + end / 4);
        if (part === "drums") {
          g.fillRect(xs, noteH + (pitch % 12) / 12 * (drumH - 4) + 2, Math.max(2 * dpr, (xe - xs) * 0.5), 3 * dpr);
        } else {
          g.fillRect(xs, y(pitch) - 2 * dpr, Math.max(2, xe - xs - 1), 4 * dpr);
        }
      }
      g.globalAlpha = 1;
    }
  }
  g.fillStyle = "#f2b134";
  g.fillRect(x(beat) - dpr, 0, 2 * dpr, h);
}

function drawPad() {
  const entry = page.controls.get("/encore/xy");
  if (!entry || !entry.canvas) return;
  const [w, h, dpr] = fit(entry.canvas);
  const g = entry.canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#2c3540";
  g.lineWidth = dpr;
  for (let i = 1; i < 4; i++) {
    g.beginPath(); g.moveTo(i * w / 4, 0); g.lineTo(i * w / 4, h); g.stroke();
    g.beginPath(); g.moveTo(0, i * h / 4); g.lineTo(w, i * h / 4); g.stroke();
  }
  const px = (p) => [p[0] * w, (1 - p[1]) * h];
  const s = page.state;
  const trail = s ? s.trail : [];
  g.lineWidth = 2 * dpr;
  for (let i = 1; i < trail.length; i++) {
    const [x0, y0] = px(trail[i - 1]), [x1, y1] = px(trail[i]);
    g.strokeStyle = `rgba(106,176,255,${0.15 + 0.85 * i / trail.length})`;
    g.beginPath(); g.moveTo(x0, y0); g.lineTo(x1, y1); g.stroke();
  }
  if (trail.length) {
    const [x, y] = px(trail[trail.length - 1]);
    g.fillStyle = "#6ab0ff";
    g.beginPath(); g.arc(x, y, 6 * dpr, 0, 2 * Math.PI); g.fill();
  }
  const [x, y] = px(entry.value);
  g.strokeStyle = "#f2b134";
  g.lineWidth = 3 * dpr;
  g.beginPath(); g.arc(x, y, 16 * dpr, 0, 2 * Math.PI); g.stroke();
}

function tick() {
  const beat = beatNow();
  if (beat !== null) {
    const bar = Math.floor(beat / 4) + 1, b = Math.floor(beat % 4) + 1;
    $("barbeat").textContent = `${bar}.${b}`;
  }
  drawRoll();
  drawPad();
}

let lastDraw = 0;
function frame(t) {
  if (t - lastDraw >= 33) { lastDraw = t; tick(); }
  requestAnimationFrame(frame);
}

page.pin = readPin();
connect();
requestAnimationFrame(frame);
