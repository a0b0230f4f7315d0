// A convolution, step by step: from a clicked output value, the kernel's window slides over the
// layer's input (play/pause, one step, or the arrow keys), and for each position the page writes
// out the input window (and the raw pixels beside the normalised values, for a layer that reads
// the image), the kernel, every product, each input channel's sum, the running sum over the
// channels, the bias and the result, computed by cnnlab's NumPy convolution beside PyTorch's.
import { state, getJSON, el, fmt, pngSrc, showError } from "./api.js";

let cur = null;  // {layer, channel, y, x, h, w, enlarged, image}
let timer = null;
let seq = 0;  // the newest request: an older answer arriving late is dropped

export async function showDot(layer, channel, y, x, enlarged, image, shape) {
  const [, h, w] = shape;
  cur = { layer, channel, y, x, h, w, enlarged, image };
  await go(y, x);
}

export function stopConv() { pause(); cur = null; }

// The shown position again, for a new input (its map redrawn as ``image``): numbers never stale.
export function refreshConv(image) {
  if (!cur) return Promise.resolve();
  cur.image = image;
  return go(cur.y, cur.x);
}

async function go(y, x) {
  if (!cur) return;
  cur.y = Math.max(0, Math.min(cur.h - 1, y));
  cur.x = Math.max(0, Math.min(cur.w - 1, x));
  const mine = ++seq;
  const d = await getJSON("conv", { input: state.input, layer: cur.layer, channel: cur.channel, y: cur.y, x: cur.x });
  if (mine !== seq || !cur) return;
  const ctx = cur.enlarged.getContext("2d");  // mark the current output value on the enlarged map
  ctx.drawImage(cur.image, 0, 0);
  ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = Math.max(0.3, cur.enlarged.width / 90);
  ctx.strokeRect(cur.x, cur.y, 1, 1);
  render(d);
}

// The next kernel position in reading order (left to right, then the next row), wrapping at the end.
function next() {
  if (!cur) return Promise.resolve();
  let { y, x } = cur;
  x += 1;
  if (x >= cur.w) { x = 0; y = (y + 1) % cur.h; }
  return go(y, x);
}

function play() {
  const button = document.getElementById("conv-play");
  if (timer) { pause(); return; }
  if (button) { button.textContent = "⏸ pause"; button.setAttribute("aria-pressed", "true"); }
  const tick = async () => {
    try { await next(); } catch (err) { pause(); showError("status", err); return; }
    if (timer) timer = setTimeout(tick, 700);
  };
  timer = setTimeout(tick, 0);
}

function pause() {
  clearTimeout(timer); timer = null;
  const button = document.getElementById("conv-play");
  if (button) { button.textContent = "▶ play"; button.setAttribute("aria-pressed", "false"); }
}

// Arrow keys move the window one output value; used by the conv panel and the enlarged map.
export function arrowMove(e) {
  const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
  if (!cur || !moves[e.key]) return false;
  e.preventDefault();
  pause();
  const [dy, dx] = moves[e.key];
  go(cur.y + dy, cur.x + dx).catch((err) => showError("status", err));
  return true;
}

function table(rows, caption, cls = "", digits = 3) {
  return el("table", { class: cls }, el("caption", { textContent: caption }),
    ...rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { textContent: v === null ? "pad" : fmt(v, digits) })))));
}

// The input channel at integer zoom, drawn without smoothing, so the receptive-field box is crisp.
function fieldCanvas(d) {
  const [, h, w] = d.input_shape;
  const zoom = Math.max(1, Math.floor(168 / Math.max(h, w)));
  const canvas = el("canvas", { width: w * zoom, height: h * zoom, class: "field",
                                title: `input channel ${d.input_channel_shown}` });
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, w * zoom, h * zoom);
    const f = d.field;
    ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = 2;
    ctx.strokeRect(f.left * zoom + 1, f.top * zoom + 1, f.width * zoom - 2, f.height * zoom - 2);
  };
  image.src = pngSrc(d.input_png);
  return canvas;
}

function normalisationNote(d) {
  const n = d.normalisation || {};
  if (!n.mean && !n.std) return "normalised = raw ÷ 255";
  const list = (v) => (v ? v.map((a) => a.toFixed(3)).join(", ") : "–");
  return `normalised = (raw ÷ 255 − mean) ÷ std, mean ${list(n.mean)}, std ${list(n.std)} per channel`;
}

function render(d) {
  const box = document.getElementById("dot-product");
  const [kh, kw] = d.kernel_size;
  const details = d.detail.map((c) => el("div", { class: "channel" },
    el("div", { textContent: `input channel ${c.in_channel}` }),
    el("div", { class: "row" },
      c.raw ? table(c.raw, "raw pixels 0–255", "raw", 0) : "",
      table(c.inputs, c.raw ? "normalised input" : "input window"), el("span", { textContent: "×" }),
      table(c.weights, "kernel weights"), el("span", { textContent: "=" }),
      table(c.products, "products", "products", 4)),
    el("div", { textContent: `Σ of the ${kh * kw} products = ${fmt(c.sum)}` })));
  // The running sum over the input channels, as the layer adds them up, then the bias.
  let running = 0;
  const lines = d.channel_sums.map((s, i) => { running += s; return `+ ch ${d.first_in_channel + i}: ${fmt(s)}  → ${fmt(running)}`; });
  const ok = d.abs_diff <= 1e-4 * Math.max(1, Math.abs(d.torch));
  const controls = el("div", { class: "row" },
    el("button", { type: "button", id: "conv-play", textContent: timer ? "⏸ pause" : "▶ play", onclick: play,
                   ariaPressed: timer ? "true" : "false" }),
    el("button", { type: "button", id: "conv-step", dataTestid: "conv-step", textContent: "step ▸",
                   title: "move the window to the next output value", onclick: () => { pause(); next().catch((err) => showError("status", err)); } }),
    el("span", { class: "muted", textContent: "or focus the map and use the arrow keys" }));
  box.replaceChildren(
    el("p", { textContent: `${d.layer} output channel ${d.channel} at (row ${d.y}, col ${d.x}): a ${kh}×${kw} kernel ` +
      `(stride ${d.stride.join("×")}, dilation ${d.dilation.join("×")}, padding ${d.padding.join("×")}) over ${d.in_channels} input channel(s)` }),
    controls,
    el("div", { class: "row" },
      el("figure", {}, fieldCanvas(d), el("figcaption", { textContent: `the window in input channel ${d.input_channel_shown}` +
        (d.in_channels > 1 ? " (largest contribution)" : "") })),
      el("div", {}, ...details,
        d.reads_model_input ? el("p", { class: "muted", textContent: `this layer reads the image: ${normalisationNote(d)}; "pad" is the zero padding` }) : "",
        d.in_channels > d.detail.length
          ? el("p", { class: "muted", textContent: `showing the ${d.detail.length} channels that contribute most of ${d.in_channels}` }) : "")),
    el("div", { class: "sums", tabIndex: 0, textContent: `running sum over the input channels:\n${lines.join("\n")}` }),
    el("p", { class: "total" },
      `running sum ${fmt(d.result - d.bias)} + bias ${fmt(d.bias)} = `,
      el("b", { dataTestid: "conv-sum", dataValue: String(d.result), dataY: String(d.y), dataX: String(d.x),
                textContent: fmt(d.result, 6) }),
      el("b", { dataTestid: "dot-result", dataValue: String(d.result), hidden: true, textContent: fmt(d.result, 6) }),
      " (cnnlab.conv) · PyTorch: ",
      el("b", { dataTestid: "dot-torch", dataValue: String(d.torch), textContent: fmt(d.torch, 6) }),
      el("span", { class: ok ? "ok" : "error", textContent: ok ? `  ✓ equal (|difference| ${d.abs_diff.toExponential(1)})`
                                                                : `  ✗ differ by ${d.abs_diff}` })));
  box.dataset.ready = "1";
  box.dataset.kind = "conv";
  document.dispatchEvent(new CustomEvent("conv-shown", { detail: d }));  // the overview draws its edges
}
