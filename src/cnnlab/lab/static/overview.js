// The Network overview: every layer as a column of feature-map thumbnails (cut from one atlas
// PNG per layer), a click enlarges a map, and a click on a pixel of a convolution's map asks
// the server for that value's arithmetic (see dot.js).
import { state, onInput, el, apiUrl, showError } from "./api.js";
import { showDot } from "./dot.js";

let selected = null;  // {layer, channel, view}

export function initOverview() {
  onInput((ref, result) => render(result.layers));
  document.getElementById("enlarged").addEventListener("click", (e) => {
    if (!selected || !selected.view.conv) return;
    const canvas = e.currentTarget;
    const r = canvas.getBoundingClientRect();
    const [, h, w] = selected.view.shape;
    const x = Math.min(w - 1, Math.floor((e.clientX - r.left) / r.width * w));
    const y = Math.min(h - 1, Math.floor((e.clientY - r.top) / r.height * h));
    showDot(selected.layer, selected.channel, y, x, canvas, selected.image).catch((err) => showError("status", err));
  });
}

function render(layers) {
  const columns = document.getElementById("columns");
  columns.replaceChildren(...layers.map(column));
  if (selected) {  // keep the enlarged map, now for the new input
    const view = layers.find((l) => l.name === selected.layer);
    if (view && view.kind === "maps" && selected.channel < view.shown) enlarge(view, selected.channel);
  }
}

function column(view) {
  const shape = view.shape.join("×");
  const col = el("div", { class: "column", dataLayer: view.name },
    el("h3", { textContent: `${view.name} · ${view.type}` }),
    el("span", { class: "shape", textContent: shape + (view.kind === "maps" && view.shown < view.shape[0] ? ` (first ${view.shown})` : "") }));
  if (view.kind === "maps") col.append(maps(view));
  else col.append(vector(view.values));
  return col;
}

function maps(view) {
  const grid = el("div", { class: "maps", style: `grid-template-columns: repeat(${Math.min(view.cols, 4)}, auto)` });
  const [th, tw] = view.tile;
  const atlas = new Image();
  const canvases = [];
  for (let c = 0; c < view.shown; c++) {
    const canvas = el("canvas", { width: tw, height: th, title: `${view.name} channel ${c} (min ${view.min[c].toFixed(3)}, max ${view.max[c].toFixed(3)})`,
                                   dataChannel: String(c) });
    canvas.addEventListener("click", () => enlarge(view, c));
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

function vector(values) {
  const n = values.length;
  const canvas = el("canvas", { class: "vector", width: 120, height: Math.min(400, Math.max(40, n * 4)) });
  const ctx = canvas.getContext("2d");
  const m = Math.max(1e-12, ...values.map(Math.abs));
  const rowH = canvas.height / n;
  values.forEach((v, i) => {
    const len = Math.abs(v) / m * 58;
    ctx.fillStyle = v >= 0 ? "#d64545" : "#2f6fde";
    ctx.fillRect(v >= 0 ? 60 : 60 - len, i * rowH, len, Math.max(rowH - (rowH > 3 ? 1 : 0), 0.5));
  });
  canvas.title = `${n} values, largest |value| ${m.toFixed(3)}`;
  return canvas;
}

function enlarge(view, channel) {
  document.querySelectorAll(".maps canvas.selected").forEach((c) => c.classList.remove("selected"));
  const thumb = document.querySelector(`.column[data-layer="${CSS.escape(view.name)}"] canvas[data-channel="${channel}"]`);
  if (thumb) thumb.classList.add("selected");
  const image = new Image();
  selected = { layer: view.name, channel, view, image };
  image.onload = () => {
    const canvas = document.getElementById("enlarged");
    canvas.width = image.width; canvas.height = image.height;
    canvas.getContext("2d").drawImage(image, 0, 0);
    document.getElementById("enlarged-figure").hidden = false;
    document.getElementById("enlarged-caption").textContent =
      `${view.name} (${view.type}) channel ${channel}, ${image.height}×${image.width}` +
      (view.conv ? " · click a pixel" : "");
    canvas.dataset.layer = view.name; canvas.dataset.channel = String(channel);
    canvas.dataset.ready = "1";
  };
  document.getElementById("enlarged").dataset.ready = "";
  image.src = apiUrl("map.png", { input: state.input, layer: view.name, channel });
}
