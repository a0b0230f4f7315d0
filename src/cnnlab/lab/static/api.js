// Talking to the lab server, and the page's shared state. Every request names the target by
// its index in the server's fixed list and the input by the reference the server gave out.

export const state = { tid: 0, info: null, input: null, result: null };
const listeners = new Set();

export function onInput(fn) { listeners.add(fn); }

// A new current input: `result` is its overview when the caller already has it (drawing).
// `live`: an update in the middle of a stroke; panels whose answer costs a request of its own
// (attribution, playground, the input's PNG, an enlarged map) wait for the stroke's last update,
// so each drawing update is one request.
export async function setInput(ref, result = null, live = false) {
  state.input = ref;
  if (!result) result = await getJSON("analyze", { input: ref });
  if (state.input !== ref) return;  // a newer input arrived meanwhile
  state.result = result;
  document.body.dataset.input = ref;  // for scripts and tests: which input the panels show
  for (const fn of listeners) {
    try { fn(ref, result, live); } catch (err) { showError("status", err); }
  }
}

function url(path, params = {}) {
  const q = new URLSearchParams(params).toString();
  return `/api/t/${state.tid}/${path}${q ? "?" + q : ""}`;
}
export const apiUrl = url;

async function parse(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

export async function getJSON(path, params = {}) {
  return parse(await fetch(url(path, params)));
}

export async function postJSON(path, body) {
  return parse(await fetch(url(path), {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }));
}

export async function postBytes(path, blob) {
  return parse(await fetch(url(path), { method: "POST", body: blob }));
}

// Messages go into the panel's error line, never to the console: a failed request is news
// for the user, not a page error.
export function showError(id, err) {
  const el = document.getElementById(id);
  if (el) el.textContent = err ? (err.message || String(err)) : "";
}

export function pngSrc(b64) { return `data:image/png;base64,${b64}`; }

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;  // CSSOM: allowed by the page's CSP, unlike a style attribute
    else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

export function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(2) : v.toFixed(digits);
}
