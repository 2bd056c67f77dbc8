// syncguard dashboard: bar widths, SVG trend charts, and the operator's archive actions.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function fillBars() {
  for (const fill of document.querySelectorAll(".fill[data-pct]")) {
    fill.style.width = `${Number(fill.dataset.pct)}%`;
  }
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function formatValue(value) {
  if (Math.abs(value) >= 1000) return value.toLocaleString(undefined, { maximumFractionDigits: 0 });
  return value.toLocaleString(undefined, { maximumFractionDigits: 2 });
}

function formatTime(iso) {
  const d = new Date(iso);
  return `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
}

function drawChart(container, points) {
  const width = 460, height = 170, left = 48, right = 12, top = 12, bottom = 24;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "trend" });
  if (points.length === 0) {
    el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" }, svg)
      .textContent = "no samples";
    container.appendChild(svg);
    return;
  }
  const times = points.map((p) => Date.parse(p[0]));
  const lows = points.map((p) => p[2]);
  const highs = points.map((p) => p[3]);
  const t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + 60000);
  let v0 = Math.min(0, ...lows), v1 = Math.max(...highs);
  if (v1 === v0) v1 = v0 + 1;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - (v - v0) / (v1 - v0)) * (height - top - bottom);
  for (const v of [v0, (v0 + v1) / 2, v1]) {
    el("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }, svg);
    el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, svg)
      .textContent = formatValue(v);
  }
  el("text", { x: left, y: height - 6, class: "axis" }, svg).textContent = formatTime(points[0][0]);
  el("text", { x: width - right, y: height - 6, "text-anchor": "end", class: "axis" }, svg)
    .textContent = formatTime(points[points.length - 1][0]);
  const band = times.map((t, i) => `${x(t)},${y(highs[i])}`)
    .concat(times.map((t, i) => `${x(t)},${y(lows[i])}`).reverse());
  el("polygon", { points: band.join(" "), class: "band" }, svg);
  const line = times.map((t, i) => `${x(t)},${y(points[i][1])}`);
  el("polyline", { points: line.join(" "), class: "line" }, svg);
  const last = points[points.length - 1];
  el("circle", { cx: x(times[times.length - 1]), cy: y(last[1]), r: 3, class: "dot" }, svg);
  const title = el("title", {}, svg);
  title.textContent = `last ${formatValue(last[1])} (min ${formatValue(last[2])}, max ${formatValue(last[3])})`;
  container.appendChild(svg);
}

function drawCharts() {
  const data = document.getElementById("trend-data");
  if (!data) return;
  const trends = JSON.parse(data.textContent);
  for (const figure of document.querySelectorAll("figure.chart")) {
    const trend = trends[Number(figure.dataset.index)];
    drawChart(figure.querySelector(".plot"), trend.points);
  }
}

function show(message, ok) {
  const result = document.getElementById("action-result");
  result.textContent = message;
  result.className = `result ${ok ? "ok" : "fail"}`;
}

async function act(button) {
  const row = button.closest("tr.entry");
  const id = row.dataset.entryId;
  const action = button.dataset.action;
  const note = row.querySelector("input.note").value.trim();
  const body = action === "replay" ? {} : note ? { note } : {};
  for (const b of row.querySelectorAll("button")) b.disabled = true;
  try {
    const response = await fetch(`/api/v1/archive/${id}/${action}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Syncguard-Dashboard": "1" },
      body: JSON.stringify(body),
    });
    const payload = await response.json();
    if (!response.ok) {
      show(`${action} refused (${response.status}): ${payload.error}`, false);
      return;
    }
    if (action === "replay") {
      show(`Replayed as task ${payload.replay_task_id} (replay #${payload.replay_count}).`, true);
      row.querySelector(".replay-cell").textContent =
        `${payload.replay_count} → ${payload.replay_task_id.slice(0, 8)}`;
      row.querySelector(".review-cell").textContent = "replayed";
    } else {
      show(`Entry ${id.slice(0, 8)} ${action === "discard" ? "discarded" : "reviewed"}.`, true);
      row.querySelector(".review-cell").textContent =
        `${payload.resolution || "reviewed"} by ${payload.reviewed_by}`;
    }
  } catch (error) {
    show(`${action} failed: ${error.message}`, false);
  } finally {
    for (const b of row.querySelectorAll("button")) b.disabled = false;
  }
}

function wireActions() {
  for (const button of document.querySelectorAll("tr.entry button[data-action]")) {
    button.addEventListener("click", () => act(button));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  fillBars();
  drawCharts();
  wireActions();
});
