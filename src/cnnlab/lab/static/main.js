// The page's entry point: choose the target, load its description, start every panel.
import { state, getJSON, setInput, showError } from "./api.js";
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
  document.getElementById("model-name").textContent =
    `${info.model} · input ${info.input_shape.join("×")} · ${info.classes.length} classes`;

  initInput(info); initPrediction(info); initOverview(info); initAttribution(info); initPlayground(info);
  if (info.has_test) await setInput("test:0");
  else await loadSample();
  document.body.dataset.ready = "1";  // tests wait for this
  // The panels below the first screen start once the first input is drawn: on two CPU cores
  // their requests would otherwise queue in front of the overview's.
  initConfusion(info); initEmbedding(info); initFilters(info); initTraining(info);
}

boot().catch((err) => showError("status", err));
