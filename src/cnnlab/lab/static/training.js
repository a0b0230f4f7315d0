// The Training panel: loss and accuracy per epoch, polled from the run's history.csv so the
// curves grow while `cnnlab train` is still writing the run.
import { getJSON } from "./api.js";

const POLL_MS = 2000;

export function initTraining(info) {
  const status = document.getElementById("training-status");
  let seen = -1;
  const poll = async () => {
    let h;
    try { h = await getJSON("history"); } catch (err) { status.textContent = err.message; setTimeout(poll, 5 * POLL_MS); return; }
    if (h.note) { status.textContent = h.note; status.dataset.state = h.state; return; }
    const n = h.epochs.length;
    // The server tells the states apart (the run's lock, metrics.json, the folder itself):
    // training, interrupted (with the resume command), finished, or deleted.
    status.textContent = h.message;
    status.dataset.state = h.state;
    status.dataset.epochs = String(n);
    if (n !== seen) {
      seen = n;
      chart("loss-chart", "loss", h.epochs, ["loss", "val_loss"]);
      chart("acc-chart", "accuracy", h.epochs, ["accuracy", "val_accuracy"]);
    }
    // A finished run changes no more; an interrupted or deleted one may be resumed or restored: look again, slowly.
    if (h.state === "training") setTimeout(poll, POLL_MS);
    else if (h.state !== "finished") setTimeout(poll, 5 * POLL_MS);
  };
  poll();
}

const COLORS = { loss: "#2f6fde", val_loss: "#d64545", accuracy: "#2f6fde", val_accuracy: "#d64545" };

function chart(id, title, epochs, keys) {
  const canvas = document.getElementById(id);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 42, B = 24, T = 18, R = 8;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#1d2330";
  ctx.fillText(title, L, 12);
  const values = epochs.flatMap((e) => keys.map((k) => e[k])).filter((v) => v !== null && Number.isFinite(v));
  if (!values.length) { ctx.fillText("no finished epoch yet", L, H / 2); return; }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const n = epochs.length;
  const px = (i) => L + (n === 1 ? (W - L - R) / 2 : (i / (n - 1)) * (W - L - R));
  const py = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  ctx.strokeStyle = "#d9dde5"; ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  ctx.fillStyle = "#6a7180";
  ctx.fillText(hi.toFixed(3), 2, T + 4); ctx.fillText(lo.toFixed(3), 2, H - B);
  ctx.fillText("epoch 1", L, H - 8); if (n > 1) ctx.fillText(String(n), W - R - 14, H - 8);
  keys.forEach((k, j) => {
    ctx.strokeStyle = ctx.fillStyle = COLORS[k];
    ctx.beginPath();
    epochs.forEach((e, i) => { if (e[k] !== null) { i ? ctx.lineTo(px(i), py(e[k])) : ctx.moveTo(px(i), py(e[k])); } });
    ctx.stroke();
    epochs.forEach((e, i) => { if (e[k] !== null) ctx.fillRect(px(i) - 2, py(e[k]) - 2, 4, 4); });
    ctx.fillText(k, W - R - 80, T + 12 + 12 * j);
  });
}
