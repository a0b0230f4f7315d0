// The other operations, one clicked value each, with the numbers the model computed: a ReLU as
// max(0, x), a max-pool window with its winner, a Linear output's largest contributions, a
// Flatten value's origin; and the output layer's softmax, logits -> exp -> sum -> probability.
import { state, getJSON, el, fmt } from "./api.js";

export async function showUnit(view, where) {
  const d = await getJSON("unit", { input: state.input, layer: view.name, ...where });
  const box = document.getElementById("dot-product");
  box.replaceChildren(head(d), body(d));
  box.dataset.ready = "1";
  box.dataset.kind = d.kind;
}

function head(d) {
  const at = d.where.length === 3 ? `channel ${d.where[0]} at (row ${d.where[1]}, col ${d.where[2]})` : `value #${d.where[0]}`;
  return el("p", { textContent: `${d.layer} (${d.type}) ${at}` });
}

function body(d) {
  if (d.kind === "relu") {
    return el("div", { dataTestid: "relu-view", class: "step", dataInput: String(d.input), dataValue: String(d.value) },
      el("p", { class: "total" }, `${d.formula} = max(0, ${fmt(d.input)}) = `, el("b", { textContent: fmt(d.value) })),
      el("p", { class: "muted", textContent: d.input < 0
        ? "the input is negative, so ReLU outputs 0: this unit is silent here"
        : "the input is positive, so ReLU passes it through unchanged" }));
  }
  if (d.kind === "pool") {
    const [wy, wx] = d.winner;
    const rows = d.window.map((row, i) => el("tr", {}, ...row.map((v, j) => el("td", {
      class: i === wy && j === wx ? "winner" : "", textContent: v === null ? "pad" : fmt(v, 3) + (i === wy && j === wx ? " ★" : "") }))));
    return el("div", { dataTestid: "pool-view", class: "step", dataValue: String(d.value), dataWinner: d.winner.join(",") },
      el("p", { textContent: `a ${d.kernel_size.join("×")} window (stride ${d.stride.join("×")}) of input channel ${d.where[0]}, ` +
        `rows ${d.top}–${d.top + d.kernel_size[0] - 1}, cols ${d.left}–${d.left + d.kernel_size[1] - 1}:` }),
      el("table", { class: "pool" }, ...rows),
      el("p", { class: "total" }, "max of the window (★) = ", el("b", { textContent: fmt(d.value) })));
  }
  if (d.kind === "dense") {
    const rows = d.top.map((t) => el("tr", {}, el("td", { textContent: `#${t.index}` }), el("td", { textContent: fmt(t.input) }),
      el("td", { textContent: "×" }), el("td", { textContent: fmt(t.weight) }), el("td", { textContent: "=" }),
      el("td", { textContent: fmt(t.product) })));
    return el("div", { dataTestid: "dense-view", class: "step", dataValue: String(d.value), dataSum: String(d.sum) },
      el("p", { textContent: `Σ over ${d.inputs} inputs of input × weight, then + bias; the ${d.top.length} largest contributions:` }),
      el("table", {}, el("tr", {}, ...["input", "value", "", "weight", "", "product"].map((t) => el("th", { textContent: t }))), ...rows),
      el("p", { textContent: `the other ${d.inputs - d.top.length} products add up to ${fmt(d.rest)}` }),
      el("p", { class: "total" }, `Σ products ${fmt(d.sum - d.bias)} + bias ${fmt(d.bias)} = `, el("b", { textContent: fmt(d.sum, 6) }),
        ` · PyTorch: ${fmt(d.value, 6)}`));
  }
  if (d.kind === "flatten") {
    const [c, y, x] = d.from;
    return el("div", { dataTestid: "flatten-view", class: "step", dataValue: String(d.value) },
      el("p", { textContent: `Flatten lays the ${d.input_shape.join("×")} maps out as one vector, channel by channel, row by row: ` +
        `value #${d.where[0]} is channel ${c}, row ${y}, col ${x} of its input = ${fmt(d.value)}` }));
  }
  const why = d.type === "Dropout" ? "at inference Dropout passes its input through unchanged" : `no step-by-step view for a ${d.type} layer yet`;
  return el("div", { class: "step", dataValue: String(d.value) }, el("p", { textContent: `value ${fmt(d.value, 6)}: ${why}` }));
}

// The Prediction panel's softmax, every class: logit z, exp(z − max z), their sum, probability.
// data-prob is the model's own probability (torch.softmax on the server); the shift by the
// largest logit changes no probability and keeps exp from overflowing.
export function renderSoftmax(sm, classes) {
  const order = sm.probs.map((p, i) => i).sort((a, b) => sm.probs[b] - sm.probs[a]);
  const rows = order.map((i) => el("tr", { class: "softmax-row", dataTestid: "softmax-row", dataClass: classes[i],
                                           dataProb: String(sm.probs[i]), dataLogit: String(sm.logits[i]) },
    el("th", { scope: "row", textContent: classes[i] }), el("td", { textContent: fmt(sm.logits[i]) }),
    el("td", { textContent: fmt(sm.exp[i]) }), el("td", { textContent: `${fmt(sm.exp[i])} ÷ ${fmt(sm.sum)}` }),
    el("td", { textContent: `${(100 * sm.probs[i]).toFixed(2)}%` })));
  const table = el("table", { class: "softmax" },
    el("caption", { textContent: `softmax: p = exp(z − ${fmt(sm.max)}) ÷ Σ exp(z − ${fmt(sm.max)}), Σ = ${fmt(sm.sum)}` }),
    el("tr", {}, ...["class", "logit z", "exp(z − max)", "÷ sum", "probability"].map((t) => el("th", { scope: "col", textContent: t }))),
    ...rows);
  document.getElementById("softmax-view").replaceChildren(table);
}
