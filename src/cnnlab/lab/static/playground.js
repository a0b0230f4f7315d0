// The Convolution playground: a named or typed kernel with padding, stride and dilation,
// applied to the current image by cnnlab's NumPy convolution, with the output-size formula.
import { state, onInput, postJSON, apiUrl, pngSrc, showError } from "./api.js";

let timer = null;

export function initPlayground(info) {
  const select = document.getElementById("pg-kernel");
  for (const [name, description] of Object.entries(info.kernels)) {
    select.append(new Option(name, name, false, name === "sobel-x"));
    select.lastChild.title = description;
  }
  select.append(new Option("custom (type the numbers)", "custom"));
  select.onchange = () => run(true);
  for (const id of ["pg-padding", "pg-stride", "pg-dilation"]) document.getElementById(id).oninput = () => later(false);
  document.getElementById("pg-numbers").oninput = () => { select.value = "custom"; later(false); };
  onInput((ref, result, live) => {
    if (live) for (const id of ["pg-input", "pg-output"]) document.getElementById(id).classList.add("stale");
    else run(false);
  });
}

function later(fill) { clearTimeout(timer); timer = setTimeout(() => run(fill), 250); }

function typedKernel() {
  return document.getElementById("pg-numbers").value.trim().split("\n").filter((l) => l.trim())
    .map((line) => line.trim().split(/[\s,]+/).map(Number));
}

async function run(fill) {
  if (!state.input) return;
  const name = document.getElementById("pg-kernel").value;
  const num = (id) => parseInt(document.getElementById(id).value, 10);
  showError("pg-error", null);
  try {
    const r = await postJSON("playground", {
      input: state.input, kernel: name === "custom" ? typedKernel() : name,
      padding: num("pg-padding"), stride: num("pg-stride"), dilation: num("pg-dilation"),
    });
    document.getElementById("pg-formula").textContent = r.formula.join("\n");
    document.getElementById("pg-caption").textContent =
      `${r.label}: ${r.input_shape.join("×")} → ${r.output_shape.join("×")}, values ${r.min.toFixed(3)} … ${r.max.toFixed(3)}`;
    document.getElementById("pg-output").src = pngSrc(r.png);
    document.getElementById("pg-output").classList.remove("stale");
    document.getElementById("pg-input").classList.remove("stale");
    document.getElementById("pg-input").src = apiUrl("input.png", { input: state.input });
    if ((fill || !document.getElementById("pg-numbers").value) && Array.isArray(r.kernel)) {
      document.getElementById("pg-numbers").value = r.kernel.map((row) => row.map((v) => +v.toFixed(4)).join(" ")).join("\n");
    }
  } catch (err) {
    // The output shown is for the previous settings: greyed out beside the error, not passed off as current.
    showError("pg-error", err);
    document.getElementById("pg-output").classList.add("stale");
  }
}
