// The Why panel: Grad-CAM, saliency or integrated gradients for any class and conv layer,
// overlaid on the input with an opacity slider.
import { state, onInput, getJSON, apiUrl, pngSrc, showError, fmt } from "./api.js";

export function initAttribution(info) {
  const cls = document.getElementById("attr-class");
  cls.append(new Option("predicted class", ""));
  info.classes.forEach((name, i) => cls.append(new Option(name, String(i))));
  const layer = document.getElementById("attr-layer");
  layer.append(new Option("layer: auto", "auto"));
  for (const name of info.conv_layers) layer.append(new Option(name, name));
  const opacity = document.getElementById("attr-opacity");
  const heat = document.getElementById("attr-heat");
  opacity.oninput = () => { heat.style.opacity = opacity.value; };
  heat.style.opacity = opacity.value;
  for (const id of ["attr-method", "attr-class", "attr-layer"]) document.getElementById(id).onchange = run;
  // Mid-stroke the map is of the previous input: greyed out until the stroke's end brings the new one.
  onInput((ref, result, live) => {
    if (live) for (const id of ["attr-base", "attr-heat"]) document.getElementById(id).classList.add("stale");
    else run();
  });
}

let busy = false, again = false;

// One request at a time: while the user draws, inputs arrive faster than gradients.
async function run() {
  if (!state.input) return;
  if (busy) { again = true; return; }
  busy = true;
  try { await explain(); } finally { busy = false; }
  if (again) { again = false; run(); }
}

async function explain() {
  showError("attr-error", null);
  const ref = state.input;
  const params = { input: ref, method: document.getElementById("attr-method").value,
                   layer: document.getElementById("attr-layer").value };
  const target = document.getElementById("attr-class").value;
  if (target !== "") params.target = target;
  try {
    const r = await getJSON("attribution", params);
    if (ref !== state.input) return;  // a newer input arrived meanwhile
    const base = document.getElementById("attr-base"), heat = document.getElementById("attr-heat");
    base.src = apiUrl("input.png", { input: state.input });
    base.hidden = false;
    base.classList.remove("stale"); heat.classList.remove("stale");
    // An all-zero (or undefined) map has nothing to draw: it stays transparent and the note
    // says why, rather than a min-max-scaled wash of colour that would look like evidence.
    const note = document.getElementById("attr-note");
    note.textContent = r.note || "";
    note.hidden = !r.note;
    if (r.png) { heat.src = pngSrc(r.png); heat.hidden = false; } else { heat.removeAttribute("src"); heat.hidden = true; }
    document.getElementById("attr-scale").hidden = !r.png;
    if (r.png) {
      document.getElementById("attr-bar").src = pngSrc(r.colorbar);
      document.getElementById("attr-lo").textContent = fmt(r.lo, 3);
      document.getElementById("attr-hi").textContent = fmt(r.hi, 3);
      document.getElementById("attr-scale-kind").textContent = r.signed
        ? "signed: blue against the class, red for it, white 0" : "magnitude (cividis): 0 transparent, the map's largest value opaque";
    }
    // Grad-CAM is a coarse map: the layer choice matters only to it.
    document.getElementById("attr-layer").disabled = !params.method.startsWith("gradcam");
    document.getElementById("attr-caption").textContent = r.caption;
    document.getElementById("attribution-panel").dataset.ready = r.input;
  } catch (err) { showError("attr-error", err); }
}
