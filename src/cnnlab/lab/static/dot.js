// One convolution output written out: the receptive field in the layer's input, the input
// values times the kernel's weights channel by channel, each channel's multiply-sum, the bias
// and the total, computed by cnnlab's NumPy convolution, beside the value PyTorch computed.
import { state, getJSON, el, fmt, pngSrc } from "./api.js";

export async function showDot(layer, channel, y, x, enlarged, image) {
  const d = await getJSON("dot", { input: state.input, layer, channel, y, x });
  const ctx = enlarged.getContext("2d");  // mark the clicked output pixel
  ctx.drawImage(image, 0, 0);
  ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = Math.max(0.3, enlarged.width / 90);
  ctx.strokeRect(x, y, 1, 1);
  render(d);
}

function table(rows) {
  return el("table", {}, ...rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { textContent: fmt(v, 3) })))));
}

function fieldCanvas(d) {
  const [, h, w] = d.input_shape;
  const canvas = el("canvas", { width: w, height: h, title: `input channel ${d.input_channel_shown}` });
  const image = new Image();
  image.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    const f = d.field;
    ctx.strokeStyle = "#ff3b3b"; ctx.lineWidth = Math.max(0.3, w / 90);
    ctx.strokeRect(f.left, f.top, f.width, f.height);
  };
  image.src = pngSrc(d.input_png);
  return canvas;
}

function render(d) {
  const box = document.getElementById("dot-product");
  const [kh, kw] = d.kernel_size;
  const details = d.detail.map((c) => el("div", { class: "channel" },
    el("div", { textContent: `input channel ${c.in_channel}: Σ inputs × weights = ${fmt(c.sum)}` }),
    el("div", { class: "row" }, table(c.inputs), el("span", { textContent: "×" }), table(c.weights))));
  const sums = d.channel_sums.map((s, i) => `ch ${d.first_in_channel + i}: ${fmt(s)}`).join("  ");
  const ok = d.abs_diff <= 1e-4 * Math.max(1, Math.abs(d.torch));
  box.replaceChildren(
    el("p", { textContent: `${d.layer} output channel ${d.channel} at (row ${d.y}, col ${d.x}): a ${kh}×${kw} kernel ` +
      `(stride ${d.stride.join("×")}, dilation ${d.dilation.join("×")}, padding ${d.padding.join("×")}) over ${d.in_channels} input channel(s)` }),
    el("div", { class: "row" },
      el("figure", {}, fieldCanvas(d), el("figcaption", { textContent: `receptive field in input channel ${d.input_channel_shown} (largest contribution)` })),
      el("div", {}, ...details, d.in_channels > d.detail.length
        ? el("p", { class: "muted", textContent: `showing the ${d.detail.length} channels that contribute most of ${d.in_channels}` }) : "")),
    el("div", { class: "sums", textContent: `each channel's multiply-sum: ${sums}` }),
    el("p", { class: "total" },
      `Σ channels ${fmt(d.result - d.bias)} + bias ${fmt(d.bias)} = `,
      el("b", { dataTestid: "dot-result", dataValue: String(d.result), textContent: fmt(d.result, 6) }),
      " (cnnlab.conv) · PyTorch: ",
      el("b", { dataTestid: "dot-torch", dataValue: String(d.torch), textContent: fmt(d.torch, 6) }),
      el("span", { class: ok ? "ok" : "error", textContent: ok ? `  ✓ equal (|difference| ${d.abs_diff.toExponential(1)})`
                                                                : `  ✗ differ by ${d.abs_diff}` })));
  box.dataset.ready = "1";
}
