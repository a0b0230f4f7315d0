// The Map panel: the test set's embedding coloured by class, wrong predictions marked;
// hovering shows the image and prediction, clicking makes it the input.
import { getJSON, setInput, apiUrl, showError, el } from "./api.js";

// Paul Tol's "muted" scheme (9 colours meant to stay distinct with colour-blind vision) and his
// pale grey as a tenth; matplotlib's tab10 mixes reds and greens that many readers cannot tell apart.
export const PALETTE = ["#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", "#cc6677", "#882255",
                        "#aa4499", "#bbbbbb"];
let points = null;
let focused = null;  // the point chosen with the arrow keys

// The nearest point whose offset leans the way of `dir` (within 45 degrees); the same point if none.
function step(from, [dx, dy]) {
  let best = from, bestD = Infinity;
  for (const p of points) {
    const ox = p.x - from.x, oy = p.y - from.y;
    const along = ox * dx + oy * dy, across = Math.abs(ox * dy - oy * dx);
    if (p === from || along <= 0 || across > along) continue;
    const d = ox * ox + oy * oy;
    if (d < bestD) { best = p; bestD = d; }
  }
  return best;
}

export function initEmbedding(info) {
  const caption = document.getElementById("embed-caption");
  if (!info.has_test) {
    caption.textContent = "a pretrained network has no test set here";
    document.getElementById("embed-go").disabled = true;
    return;
  }
  if (!info.umap) {
    const umap = document.querySelector("#embed-method option[value=umap]");
    umap.disabled = true;
    umap.textContent = "UMAP (pip install umap-learn)";
  }
  document.getElementById("embed-go").onclick = () => load(document.getElementById("embed-method").value, info);
  const canvas = document.getElementById("embed-canvas");
  canvas.addEventListener("mousemove", (e) => hover(e, info));
  canvas.addEventListener("mouseleave", () => { document.getElementById("embed-tip").hidden = true; });
  canvas.addEventListener("click", (e) => {
    const p = nearest(e);
    if (p) setInput(`test:${p.index}`).catch((err) => showError("embed-error", err));
  });
  // From the keyboard: the arrow keys walk to the nearest point in their direction, Enter makes it the input.
  canvas.addEventListener("keydown", (e) => {
    if (!points || !points.length) return;
    const dirs = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      if (focused) setInput(`test:${focused.index}`).catch((err) => showError("embed-error", err));
      return;
    }
    if (!dirs[e.key]) return;
    e.preventDefault();
    focused = focused ? step(focused, dirs[e.key]) : points[0];
    showTip(focused, info, 10 + focused.x * (canvas.width - 20), 10 + focused.y * (canvas.height - 20));
    canvas.dataset.focused = String(focused.index);
  });
  canvas.addEventListener("blur", () => { document.getElementById("embed-tip").hidden = true; });
  load("pca", info);
}

async function load(method, info) {
  showError("embed-error", null);
  document.getElementById("embed-caption").textContent = `computing ${method} (cached in the run directory)…`;
  try {
    const r = await getJSON("embedding", { method });
    points = r.points;
    draw(r, info);
    legend(info);
    document.getElementById("embed-caption").textContent = r.caption;
    document.getElementById("embedding-panel").dataset.ready = method;
  } catch (err) { showError("embed-error", err); document.getElementById("embed-caption").textContent = ""; }
}

function draw(r, info) {
  const canvas = document.getElementById("embed-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const p of r.points) {
    ctx.fillStyle = PALETTE[p.label % PALETTE.length];
    const x = 10 + p.x * (canvas.width - 20), y = 10 + p.y * (canvas.height - 20);
    if (p.label === p.pred) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    else { ctx.strokeStyle = ctx.fillStyle; ctx.lineWidth = 1.5; ctx.beginPath(); ctx.moveTo(x - 3, y - 3); ctx.lineTo(x + 3, y + 3);
           ctx.moveTo(x + 3, y - 3); ctx.lineTo(x - 3, y + 3); ctx.stroke(); }
  }
}

// Which colour is which class (classes past the palette's length reuse its colours, said so).
function legend(info) {
  const box = document.getElementById("embed-legend");
  const items = info.classes.slice(0, 20).map((name, i) => el("li", {},
    el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), name));
  if (info.classes.length > PALETTE.length) items.push(el("li", { class: "muted",
    textContent: `${info.classes.length} classes share ${PALETTE.length} colours` }));
  items.push(el("li", { class: "muted", textContent: "■ right · ✕ wrong" }));
  box.replaceChildren(...items);
}

function nearest(e) {
  if (!points) return null;
  const canvas = document.getElementById("embed-canvas");
  const r = canvas.getBoundingClientRect();
  const mx = (e.clientX - r.left) * canvas.width / r.width, my = (e.clientY - r.top) * canvas.height / r.height;
  let best = null, bestD = 64;
  for (const p of points) {
    const dx = 10 + p.x * (canvas.width - 20) - mx, dy = 10 + p.y * (canvas.height - 20) - my;
    const d = dx * dx + dy * dy;
    if (d < bestD) { best = p; bestD = d; }
  }
  return best;
}

function hover(e, info) {
  const p = nearest(e);
  if (!p) { document.getElementById("embed-tip").hidden = true; return; }
  showTip(p, info, e.offsetX, e.offsetY);
}

function showTip(p, info, x, y) {
  const tip = document.getElementById("embed-tip");
  tip.replaceChildren(el("img", { src: apiUrl(`test/${p.index}.png`), alt: "" }),
    el("div", { textContent: `#${p.index}: ${info.classes[p.label]} → ${info.classes[p.pred]}` }));
  tip.style.left = `${x + 12}px`; tip.style.top = `${y + 12}px`;
  tip.hidden = false;
}
