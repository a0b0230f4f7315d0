// The Input panel: test images (by index, random, "a wrong one"), uploads (picker and drag
// and drop, sent as the raw file body), and a canvas to draw on whose strokes are sent to the
// model while the user draws.
import { state, getJSON, postJSON, postBytes, setInput, showError, onInput, apiUrl } from "./api.js";

let seed = 1;
const DEBOUNCE_MS = 40;  // a pointer moves every ~16 ms: about one update per 2-3 moves, well under the eye's lag

async function pick(kind) {
  const { input } = await getJSON("pick", { kind, seed: seed++ });
  await setInput(input);
}

async function upload(file) {
  if (!file) return;
  const { input, note } = await postBytes("upload", file);
  await setInput(input);
  document.getElementById("input-caption").textContent = `${file.name}${note ? " · " + note : ""}`;
}

export async function loadSample() {
  const { input, note } = await postJSON("sample", {});
  await setInput(input);
  document.getElementById("input-caption").textContent = note;
}

function guarded(fn) {
  return async (...args) => {
    showError("input-error", null);
    try { await fn(...args); } catch (err) { showError("input-error", err); }
  };
}

export function initInput(info) {
  document.getElementById("pick-random").onclick = guarded(() => pick("random"));
  document.getElementById("pick-wrong").onclick = guarded(() => pick("wrong"));
  document.getElementById("pick-go").onclick = guarded(
    () => setInput(`test:${parseInt(document.getElementById("pick-index").value, 10) || 0}`));
  document.getElementById("sample-photo").onclick = guarded(loadSample);
  const picker = document.getElementById("upload");
  picker.onchange = guarded(() => upload(picker.files[0]));
  const zone = document.body;
  zone.addEventListener("dragover", (e) => { e.preventDefault(); document.getElementById("drop-zone").classList.add("over"); });
  zone.addEventListener("dragleave", () => document.getElementById("drop-zone").classList.remove("over"));
  zone.addEventListener("drop", guarded(async (e) => {
    e.preventDefault();
    document.getElementById("drop-zone").classList.remove("over");
    await upload(e.dataTransfer.files[0]);
  }));
  initDrawing(info);
  onInput((ref, result, live) => {
    if (!live) document.getElementById("current-input").src = apiUrl("input.png", { input: ref });
    document.getElementById("current-input").classList.toggle("stale", live);  // the canvas shows the stroke meanwhile
    const caption = document.getElementById("input-caption");
    if (ref.startsWith("test:")) {
      caption.textContent = `test image ${ref.slice(5)}` + (result.label ? ` · true class ${result.label.name}` : "");
      document.getElementById("pick-index").value = ref.slice(5);
    } else if (result.note === "drawn") caption.textContent = "your drawing";
  });
}

// ------------------------------------------------------------------ drawing

function initDrawing(info) {
  const canvas = document.getElementById("draw-canvas");
  const ctx = canvas.getContext("2d");
  const [h, w] = info.input_shape;
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  document.getElementById("clear-canvas").onclick = clear;
  let last = null, busy = false, pending = false, timer = null, pendingFinal = false;

  // One request per drawing update: moves within DEBOUNCE_MS of each other make one update,
  // never two requests in flight; the stroke's end sends the final update that every panel follows.
  const send = async (final = false) => {
    pendingFinal = pendingFinal || final;
    if (busy) { pending = true; return; }
    busy = true;
    const isFinal = pendingFinal;
    pendingFinal = false;
    document.body.dataset.drawing = "sending";  // for tests: the page is waiting for a prediction
    try {
      const pixels = toModelPixels(canvas, h, w);
      if (pixels) {
        const result = await postJSON("draw", { pixels });
        await setInput(result.input, result, !isFinal);
      }
    } catch (err) { showError("input-error", err); }
    busy = false;
    if (pending || pendingFinal) { pending = false; send(); } else document.body.dataset.drawing = "idle";
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(() => send(false), DEBOUNCE_MS); };

  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = point(e);
    stroke(ctx, last, last);
    later();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = point(e);
    stroke(ctx, last, p);
    last = p;
    later();
  });
  const end = () => { if (last) { last = null; clearTimeout(timer); send(true); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

function stroke(ctx, [x0, y0], [x1, y1]) {
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
}

// The drawing as the model's input, prepared the way MNIST's digits were: the ink's bounding
// box scaled to fit 20x20 (of 28x28, proportionally for other sizes) and centred. Returns
// base64 of h*w grey bytes, or null for an empty canvas.
function toModelPixels(canvas, h, w) {
  const src = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let top = canvas.height, left = canvas.width, bottom = -1, right = -1;
  for (let y = 0; y < canvas.height; y++) {
    for (let x = 0; x < canvas.width; x++) {
      if (src[(y * canvas.width + x) * 4] > 16) {
        if (y < top) top = y; if (y > bottom) bottom = y;
        if (x < left) left = x; if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return null;
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d");
  sctx.fillStyle = "#000"; sctx.fillRect(0, 0, w, h);
  const bw = right - left + 1, bh = bottom - top + 1;
  const scale = Math.min((w * 20 / 28) / bw, (h * 20 / 28) / bh);
  const dw = bw * scale, dh = bh * scale;
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(canvas, left, top, bw, bh, (w - dw) / 2, (h - dh) / 2, dw, dh);
  const data = sctx.getImageData(0, 0, w, h).data;
  let binary = "";
  for (let i = 0; i < w * h; i++) binary += String.fromCharCode(data[i * 4]);
  return btoa(binary);
}
