// The Errors panel: the test set's confusion matrix; a cell lists its images with the
// predicted class's and the actual class's probabilities; an image becomes the input.
import { getJSON, setInput, el, apiUrl, showError } from "./api.js";

export async function initConfusion(info) {
  const summary = document.getElementById("confusion-summary");
  if (!info.has_test) { summary.textContent = "a pretrained network has no test set here"; return; }
  summary.textContent = "evaluating the test set…";
  try {
    render(await getJSON("confusion"));
  } catch (err) { summary.textContent = err.message; }
}

function render(cm) {
  const k = cm.classes.length;
  const max = Math.max(1, ...cm.matrix.flat());
  document.getElementById("confusion-summary").textContent =
    `${cm.n} test images, accuracy ${(100 * cm.accuracy).toFixed(2)}% · rows: actual, columns: predicted`;
  const head = el("tr", {}, el("th", { textContent: "" }), ...cm.classes.map((c) => el("th", { textContent: c })));
  const rows = cm.matrix.map((row, a) => el("tr", {}, el("th", { textContent: cm.classes[a] }), ...row.map((n, p) => {
    const t = Math.sqrt(n / max);
    // Blue for correct, orange for wrong (Okabe-Ito): told apart with any colour vision, and
    // the diagonal is also bold, so colour is never the only cue.
    const hue = a === p ? "0,114,178" : "213,94,0";
    const button = el("button", { type: "button", textContent: String(n), class: a === p ? "diag" : "",
      title: `actual ${cm.classes[a]}, predicted ${cm.classes[p]}: ${n}`, dataActual: String(a), dataPredicted: String(p),
      style: `background: rgba(${hue},${n ? 0.1 + 0.9 * t : 0}); color: ${ink(hue, n ? 0.1 + 0.9 * t : 0)}` });
    button.onclick = () => openCell(a, p, cm.classes).catch((err) => showError("cell-caption", err));
    return el("td", {}, button);
  })));
  document.getElementById("confusion-matrix").replaceChildren(el("table", {}, head, ...rows));
  if (k > 30) document.getElementById("confusion-summary").textContent += " (scroll)";
}

// Black or white text, whichever reads better on the cell's colour blended over white (WCAG contrast).
function ink(rgb, alpha) {
  const lin = rgb.split(",").map((c) => {
    const v = (255 * (1 - alpha) + Number(c) * alpha) / 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  const L = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000" : "#fff";
}

async function openCell(actual, predicted, classes) {
  const cell = await getJSON("cell", { actual, predicted, limit: 60 });
  document.getElementById("cell-caption").textContent =
    `${cell.count} test images of ${cell.actual} predicted as ${cell.predicted}` +
    (cell.count > cell.items.length ? ` (the ${cell.items.length} most confident shown)` : "") + " · click one to make it the input";
  const figures = cell.items.map((item) => {
    // A button holding the picture: reachable with Tab, chosen with Enter or Space.
    const fig = el("button", { type: "button", class: "thumb", dataInput: item.input, title: `test image ${item.index}`,
                               ariaLabel: `test image ${item.index}: ${classes[predicted]} ${(100 * item.predicted_prob).toFixed(0)}%, ` +
                                          `${classes[actual]} ${(100 * item.actual_prob).toFixed(0)}%; make it the input` },
      el("img", { src: apiUrl(`test/${item.index}.png`), alt: "" }),
      el("span", { class: "cap", textContent: `${classes[predicted]} ${(100 * item.predicted_prob).toFixed(0)}%` }),
      el("span", { class: "cap", textContent: `${classes[actual]} ${(100 * item.actual_prob).toFixed(0)}%` }));
    fig.onclick = () => setInput(item.input).catch((err) => showError("cell-caption", err));
    return fig;
  });
  document.getElementById("cell-images").replaceChildren(...figures);
}
