// The Prediction panel: top-k probability bars, redrawn for every new input (live while drawing).
import { onInput, el } from "./api.js";
import { renderSoftmax } from "./steps.js";

export function initPrediction(info) {
  // A few classes: the softmax's table is short, open it; ImageNet's 1000 rows wait for a click.
  if (info.classes.length <= 20) document.getElementById("softmax-details").open = true;
  onInput((ref, result) => {
    render(result.prediction, result.label);
    renderSoftmax(result.softmax, info.classes);
  });
}

function render(prediction, label) {
  const list = document.getElementById("bars");
  list.replaceChildren(...prediction.slice(0, 10).map((p, i) => el("li", { dataClass: p.name, dataProb: p.prob.toFixed(6) },
    el("span", { class: "name", title: p.name, textContent: p.name + (label && label.index === p.index ? " ✓" : "") }),
    el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * p.prob).toFixed(1)}%` })),
    el("span", { class: "pct", textContent: `${(100 * p.prob).toFixed(1)}%` }))));
  list.dataset.top = prediction[0].name;
}
