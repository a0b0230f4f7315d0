// The Network overview: every layer as a column of feature-map thumbnails (cut from one atlas
// PNG per layer), a click (or Enter) enlarges a map, and a click on a value, or the arrow keys on
// the enlarged map, explains it: a convolution step by step (dot.js), a ReLU, a max-pool, a
// Linear output or a Flatten value (steps.js).
import { state, onInput, el, apiUrl, showError, fmt } from "./api.js";
import { showDot, arrowMove, stopConv, refreshConv } from "./dot.js";
import { showUnit } from "./steps.js";

const FIT_UNITS = 12;
// In a deep network, layers that act value by value (their maps look like their input's) start
// collapsed to a narrow column with a button, so the stages that change the picture fit more of the screen.
const ELEMENTWISE = new Set(["ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Dropout", "Dropout2d", "BatchNorm2d",
                             "BatchNorm1d", "Identity", "Hardswish", "Sigmoid", "Tanh"]);
const expanded = new Set();
let shownLayers = [];
const HINT = "click a value of an enlarged map, or of a vector column, to see how it was computed";
let selected = null;  // {layer, channel, view, image}
let cursor = null;  // the explained value of the enlarged map: {y, x}
let explainAgain = null;  // re-explains the shown value for a new input, so its numbers are never stale

function explainPixel(y, x) {
  const canvas = document.getElementById("enlarged");
  const [, h, w] = selected.view.shape;
  cursor = { y: Math.max(0, Math.min(h - 1, y)), x: Math.max(0, Math.min(w - 1, x)) };
  const { layer, channel, view, image } = selected;
  const at = { ...cursor };
  if (view.conv) {
    explainAgain = () => refreshConv(selected.image);
    return showDot(layer, channel, at.y, at.x, canvas, image, view.shape);
  }
  stopConv();
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = Math.max(0.3, canvas.width / 90);
  ctx.strokeRect(at.x, at.y, 1, 1);
  explainAgain = () => showUnit(view, { channel, y: at.y, x: at.x });
  return explainAgain();
}

// CNN Explainer's edges: from the explained convolution value's map to the input channels that
// contribute most to it (outlined) in the column before, when that column is the conv's input.
function drawEdges(d) {
  const columns = document.getElementById("columns");
  columns.querySelectorAll("svg.edges").forEach((s) => s.remove());
  columns.querySelectorAll("canvas.contrib").forEach((c) => c.classList.remove("contrib"));
  const at = shownLayers.findIndex((l) => l.name === d.layer);
  const prev = shownLayers[at - 1];
  const target = columns.querySelector(`.column[data-layer="${CSS.escape(d.layer)}"] canvas[data-channel="${d.channel}"]`);
  if (at < 1 || !target || !prev || prev.kind !== "maps" || prev.shape.join() !== d.input_shape.join()) return;
  const box = columns.getBoundingClientRect();
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("width", columns.scrollWidth); svg.setAttribute("height", columns.scrollHeight);
  const t = target.getBoundingClientRect();
  for (const c of d.detail) {
    const src = columns.querySelector(`.column[data-layer="${CSS.escape(prev.name)}"] canvas[data-channel="${c.in_channel}"]`);
    if (!src) continue;  // a channel past the thumbnails shown
    src.classList.add("contrib");
    const s = src.getBoundingClientRect();
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", s.right - box.left + columns.scrollLeft); line.setAttribute("y1", s.top + s.height / 2 - box.top + columns.scrollTop);
    line.setAttribute("x2", t.left - box.left + columns.scrollLeft); line.setAttribute("y2", t.top + t.height / 2 - box.top + columns.scrollTop);
    line.setAttribute("stroke", c.sum >= 0 ? "#d55e00" : "#0072b2");
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  columns.append(svg);
  columns.dataset.edges = String(svg.childElementCount);
}

export function initOverview() {
  document.addEventListener("conv-shown", (e) => drawEdges(e.detail));
  onInput((ref, result, live) => render(result.layers, live));
  const canvas = document.getElementById("enlarged");
  canvas.addEventListener("click", (e) => {
    if (!selected) return;
    const r = canvas.getBoundingClientRect();
    const [, h, w] = selected.view.shape;
    const x = Math.min(w - 1, Math.floor((e.clientX - r.left) / r.width * w));
    const y = Math.min(h - 1, Math.floor((e.clientY - r.top) / r.height * h));
    explainPixel(y, x).catch((err) => showError("status", err));
  });
  canvas.addEventListener("keydown", (e) => {
    if (!selected) return;
    if (selected.view.conv && arrowMove(e)) return;  // the convolution's window moves itself
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0], Enter: [0, 0], " ": [0, 0] };
    if (!moves[e.key]) return;
    e.preventDefault();
    const [, h, w] = selected.view.shape;
    const from = cursor || { y: Math.floor(h / 2), x: Math.floor(w / 2) };
    explainPixel(from.y + moves[e.key][0], from.x + moves[e.key][1]).catch((err) => showError("status", err));
  });
}

function render(layers, live = false) {
  if (!explainAgain) {  // nothing to recompute: no numbers of the previous input stay on show
    stopConv();
    const box = document.getElementById("dot-product");
    box.replaceChildren(el("p", { class: "muted", textContent: HINT }));
    box.dataset.ready = "";
  }
  const columns = document.getElementById("columns");
  // Up to FIT_UNITS layers share the screen's width (CNN Explainer's single-screen flow);
  // a deeper network keeps fixed-size columns and scrolls sideways.
  columns.classList.toggle("fit", layers.length <= FIT_UNITS);
  shownLayers = layers;
  const deep = layers.length > FIT_UNITS;
  columns.replaceChildren(...layers.map((view, i) => column(view, i === layers.length - 1, deep)));
  if (live) return;  // mid-stroke: the enlarged map and its explanation follow the stroke's last update
  if (selected) {  // keep the enlarged map, now for the new input
    const view = layers.find((l) => l.name === selected.layer);
    if (view && view.kind === "maps" && selected.channel < view.shown) { enlarge(view, selected.channel, true); return; }
  }
  if (explainAgain) explainAgain().catch((err) => showError("status", err));  // a vector value, for the new input
}

function column(view, last, deep = false) {
  const shape = view.shape.join("×");
  if (deep && ELEMENTWISE.has(view.type) && !expanded.has(view.name)) {
    const col = el("div", { class: "column collapsed", dataLayer: view.name },
      el("h3", { textContent: view.name }), el("span", { class: "shape", textContent: view.type }));
    const button = el("button", { type: "button", textContent: "▸", title: `show ${view.name} (${view.type}, ${shape})`,
                                  ariaLabel: `show ${view.name}, ${view.type}, ${shape}`, ariaExpanded: "false" });
    button.onclick = () => { expanded.add(view.name); col.replaceWith(column(view, last, deep)); };
    col.append(button);
    return col;
  }
  const col = el("div", { class: "column", dataLayer: view.name },
    el("h3", { textContent: `${view.name} · ${view.type}` }),
    el("span", { class: "shape", textContent: shape + (view.kind === "maps" && view.shown < view.shape[0] ? ` (first ${view.shown})` : "") }));
  if (view.kind === "maps") col.append(maps(view));
  else col.append(vector(view, last));
  return col;
}

function maps(view) {
  const grid = el("div", { class: "maps" });
  const [th, tw] = view.tile;
  const atlas = new Image();
  const canvases = [];
  for (let c = 0; c < view.shown; c++) {
    const canvas = el("canvas", { width: tw, height: th, title: `${view.name} channel ${c} (min ${view.min[c].toFixed(3)}, max ${view.max[c].toFixed(3)})`,
                                   dataChannel: String(c) });
    canvas.tabIndex = 0;
    canvas.setAttribute("role", "button");
    canvas.setAttribute("aria-label", `enlarge ${view.name} channel ${c}`);
    canvas.addEventListener("click", () => enlarge(view, c));
    canvas.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); enlarge(view, c); } });
    canvases.push(canvas);
    grid.append(canvas);
  }
  atlas.onload = () => canvases.forEach((canvas, c) => {
    const sx = (c % view.cols) * tw, sy = Math.floor(c / view.cols) * th;
    canvas.getContext("2d").drawImage(atlas, sx, sy, tw, th, 0, 0, tw, th);
  });
  atlas.src = `data:image/png;base64,${view.atlas}`;
  return grid;
}

function vector(view, last) {
  const values = view.values;
  const n = values.length;
  // The output layer of a classifier: each value beside its class name (a few classes only).
  const classes = state.info ? state.info.classes : [];
  const named = last && n === classes.length && n <= 20;
  const W = named ? 170 : 120, mid = named ? 115 : 60, half = named ? 53 : 58;
  const canvas = el("canvas", { class: "vector" + (named ? " named" : ""), width: W,
                                height: named ? n * 16 : Math.min(400, Math.max(40, n * 4)) });
  const ctx = canvas.getContext("2d");
  const m = Math.max(1e-12, ...values.map(Math.abs));
  const rowH = canvas.height / n;
  ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
  values.forEach((v, i) => {
    const len = Math.abs(v) / m * half;
    ctx.fillStyle = v >= 0 ? "#d55e00" : "#0072b2";
    ctx.fillRect(v >= 0 ? mid : mid - len, i * rowH, len, Math.max(rowH - (rowH > 3 ? 1 : 0), 0.5));
    if (named) {
      ctx.fillStyle = "#1d2330";
      ctx.fillText(classes[i].length > 9 ? classes[i].slice(0, 8) + "…" : classes[i], 2, i * rowH + rowH / 2);
    }
  });
  if (named) canvas.dataset.classes = classes.join("|");
  canvas.title = `${n} values, largest |value| ${m.toFixed(3)} · click one to see how it was computed`;
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "button");
  canvas.setAttribute("aria-label", `${view.name}: ${n} values; Enter explains one, arrow keys move`);
  let index = 0;
  const explain = (i) => {
    index = Math.max(0, Math.min(n - 1, i));
    stopConv();
    explainAgain = () => showUnit(view, { index });
    explainAgain().catch((err) => showError("status", err));
  };
  canvas.addEventListener("click", (e) => {
    const r = canvas.getBoundingClientRect();
    explain(Math.floor((e.clientY - r.top) / r.height * n));
  });
  canvas.addEventListener("keydown", (e) => {
    const step = { ArrowUp: -1, ArrowDown: 1, Enter: 0, " ": 0 }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    explain(index + step);
  });
  return canvas;
}

function enlarge(view, channel, again = false) {
  document.querySelectorAll(".maps canvas.selected").forEach((c) => c.classList.remove("selected"));
  const thumb = document.querySelector(`.column[data-layer="${CSS.escape(view.name)}"] canvas[data-channel="${channel}"]`);
  if (thumb) thumb.classList.add("selected");
  const image = new Image();
  if (!again) {
    cursor = null; explainAgain = null; stopConv();
    const box = document.getElementById("dot-product");
    box.replaceChildren(el("p", { class: "muted", textContent: HINT }));
    box.dataset.ready = "";
  }
  selected = { layer: view.name, channel, view, image };
  image.onload = () => {
    const canvas = document.getElementById("enlarged");
    canvas.width = image.width; canvas.height = image.height;
    canvas.getContext("2d").drawImage(image, 0, 0);
    document.getElementById("enlarged-figure").hidden = false;
    document.getElementById("enlarged-caption").textContent =
      `${view.name} (${view.type}) channel ${channel}, ${image.height}×${image.width}` +
      // The thumbnails' range is the map's own unless they were shrunk (averaging changes the extremes).
      (view.min[channel] === view.max[channel] ? ` · every value is ${fmt(view.min[channel], 3)} (drawn black)`
        : view.tile[0] === image.height && view.tile[1] === image.width
          ? ` · black ${fmt(view.min[channel], 3)}, white ${fmt(view.max[channel], 3)}` : " · black its minimum, white its maximum") +
      " · click a value (or focus the map: Enter, arrow keys)";
    canvas.dataset.layer = view.name; canvas.dataset.channel = String(channel);
    canvas.dataset.ready = "1";
    canvas.scrollIntoView({ block: "nearest" });  // an enlarged map below the fold comes into view
    if (again && explainAgain) explainAgain().catch((err) => showError("status", err));
  };
  document.getElementById("enlarged").dataset.ready = "";
  image.src = apiUrl("map.png", { input: state.input, layer: view.name, channel });
}
