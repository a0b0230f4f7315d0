// The page's entry point: choose the target, load its description, start every panel.
import { state, getJSON, setInput, showError, el } from "./api.js";
import { initInput, loadSample } from "./input.js";
import { initPrediction } from "./prediction.js";
import { initOverview } from "./overview.js";
import { initAttribution } from "./attribution.js";
import { initConfusion } from "./confusion.js";
import { initEmbedding } from "./embedding.js";
import { initFilters } from "./filters.js";
import { initPlayground } from "./playground.js";
import { initTraining } from "./training.js";

async function boot() {
  const params = new URLSearchParams(location.search);
  state.tid = Math.max(0, parseInt(params.get("t") || "0", 10) || 0);
  // Both at once: the target list only fills the selector.
  const [targets, info] = await Promise.all([fetch("/api/targets").then((r) => r.json()), getJSON("info")]);
  const select = document.getElementById("target");
  for (const t of targets) select.append(new Option(`${t.name} (${t.kind})`, t.id, false, t.id === state.tid));
  select.addEventListener("change", () => { location.search = `?t=${select.value}`; });

  state.info = info;
  document.body.classList.add(info.kind);
  // A photo model (three input channels) is not for drawing digits: the canvas is not offered.
  if (info.input_shape[2] === 3) document.body.classList.add("photo");
  if (!info.has_test) {
    notApplicable("confusion-panel", `${info.name} is a pretrained network: the lab has no test set for it, ` +
      "so there is no confusion matrix; upload photos to see its answers one by one.");
    notApplicable("embedding-panel", "No test set for a pretrained network, so no map of one.");
  }
  if (info.kind === "pretrained") {
    notApplicable("training-panel", `${info.name} was trained elsewhere (ImageNet): there are no training curves here.`);
  }
  document.getElementById("model-name").textContent =
    `${info.model} · input ${info.input_shape.join("×")} · ${info.classes.length} classes`;

  if (info.waiting) return waitForWeights(info);
  initInput(info); initPrediction(info); initOverview(info); initAttribution(info); initPlayground(info);
  try {
    if (info.has_test) await setInput("test:0");
    else await loadSample();
  } catch (err) { showError("input-error", err); }  // e.g. no test set here: drawing and uploads still work
  document.body.dataset.ready = "1";  // tests wait for this
  // The panels below the first screen start once the first input is drawn: on two CPU cores
  // their requests would otherwise queue in front of the overview's.
  if (info.has_test) { initConfusion(info); initEmbedding(info); }
  initFilters(info);
  if (info.kind !== "pretrained") initTraining(info);
}

// A panel that does not apply to this target: its controls are hidden and one line says why,
// rather than empty boxes.
function notApplicable(id, reason) {
  const panel = document.getElementById(id);
  panel.classList.add("na");
  panel.dataset.na = "1";
  panel.querySelector("h2").after(el("p", { class: "na-note muted", textContent: reason }));
}

// A run started moments ago has no weights until its first epoch ends: show the curves, and
// reload once there is a network to look at.
function waitForWeights(info) {
  document.getElementById("status").textContent = info.waiting;
  initTraining(info);
  document.body.dataset.ready = "waiting";
  const poll = async () => {
    try { if (!(await getJSON("info")).waiting) { location.reload(); return; } } catch (err) { showError("status", err); }
    setTimeout(poll, 3000);
  };
  setTimeout(poll, 3000);
}

boot().catch((err) => showError("status", err));
