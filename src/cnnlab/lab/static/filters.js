// The Filters panel: a conv layer's learned filters, and feature visualisations of its channels.
import { getJSON, pngSrc, showError, el } from "./api.js";

export function initFilters(info) {
  const select = document.getElementById("filter-layer");
  for (const name of info.conv_layers) select.append(new Option(name, name));
  select.onchange = () => load(select.value);
  if (info.conv_layers.length) load(info.conv_layers[0]);
  const button = document.getElementById("featvis-go");
  let next = 0, shownLayer = null;
  button.onclick = async () => {
    const start = select.value === shownLayer ? next : 0;  // each click: the next few channels
    shownLayer = select.value;
    button.disabled = true;
    try { next = await featvis(select.value, start); } catch (err) {
      showError("filters-error", err);
      document.getElementById("featvis-caption").textContent = "";
      next = 0;
    }
    button.disabled = false;
  };
}

async function load(layer) {
  showError("filters-error", null);
  try {
    const f = await getJSON("filters", { layer });
    document.getElementById("filter-grid").src = pngSrc(f.png);
    document.getElementById("filter-bar").src = pngSrc(f.colorbar);
    document.getElementById("filter-lo").textContent = f.min.toFixed(3);
    document.getElementById("filter-hi").textContent = f.max.toFixed(3);
    document.getElementById("filter-scale").hidden = false;
    document.getElementById("filter-caption").textContent =
      `weights ${f.shape.join("×")} (out, in, kh, kw), ${f.shown} patches shown, scaled from ${f.min.toFixed(3)} to ${f.max.toFixed(3)}`;
  } catch (err) { showError("filters-error", err); }
}

async function featvis(layer, start) {
  showError("filters-error", null);
  document.getElementById("featvis-caption").textContent = "optimising inputs… (seconds for a small net, a minute or more for an ImageNet one)";
  const r = await getJSON("featurevis", { layer, start });
  document.getElementById("featvis-caption").textContent = r.caption || "";
  document.getElementById("featvis").replaceChildren(...r.images.map((im) =>
    el("figure", {}, el("img", { src: pngSrc(im.png), alt: `channel ${im.channel}` }),
      el("figcaption", { textContent: `channel ${im.channel}` }))));
  document.getElementById("filters-panel").dataset.featvis = `${layer}:${start}`;
  return r.next;
}
