// The docingest dashboard: polls /stats and /failures, draws the figures with inline SVG.
// Every string that comes from the service goes in with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY = 150; // points kept in the live charts: five minutes at one poll every 2 s
const KEY_STORAGE = "docingest-api-key";
const SVG = "http://www.w3.org/2000/svg";

const history = { rate: [], lag: [] };
let previous = null; // the last /stats answer, to turn cumulative totals into rates
let timer = null;

function byId(id) {
  return document.getElementById(id);
}

class Unauthorized extends Error {}

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401 || response.status === 403) throw new Unauthorized(response.status);
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

function formatNumber(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

function formatSeconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells);
      return tr;
    }),
  );
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) {
    element.setAttribute(attribute, String(value));
  }
  return element;
}

// A chart of numbers on a 600×160 canvas: a line (live series) or bars (per minute).
function drawChart(svg, values, kind, format) {
  const width = 600;
  const height = 160;
  const top = 14;
  const max = Math.max(...values, 0) || 1;
  const y = (value) => height - 2 - (value / max) * (height - top - 2);
  const children = [
    svgElement("line", { x1: 0, x2: width, y1: top, y2: top, class: "grid" }),
    svgElement("line", { x1: 0, x2: width, y1: height - 2, y2: height - 2, class: "grid" }),
  ];
  const label = svgElement("text", { x: 4, y: 11, class: "axis" });
  label.textContent = `max ${format(max)}`;
  children.push(label);
  if (kind === "bars") {
    const step = width / Math.max(values.length, 1);
    values.forEach((value, i) => {
      children.push(
        svgElement("rect", {
          x: i * step + 1,
          y: y(value),
          width: Math.max(step - 2, 1),
          height: height - 2 - y(value),
          class: "bar",
        }),
      );
    });
  } else if (values.length > 1) {
    const step = width / (HISTORY - 1);
    const offset = (HISTORY - values.length) * step;
    const points = values.map((value, i) => `${offset + i * step},${y(value)}`).join(" ");
    children.push(svgElement("polyline", { points, class: "line" }));
  }
  svg.replaceChildren(...children);
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

// Rates from the workers' cumulative totals: documents and lag between two polls.
function updateRates(stats) {
  if (!stats.workers || !stats.lag) return;
  const now = new Date(stats.generated_at).getTime() / 1000;
  if (previous && previous.workers && previous.lag) {
    const seconds = now - new Date(previous.generated_at).getTime() / 1000;
    const documents = stats.workers.documents_processed - previous.workers.documents_processed;
    const lagged = stats.lag.documents - previous.lag.documents;
    if (seconds > 0 && documents >= 0) {
      push(history.rate, documents / seconds);
      byId("rate").textContent = formatNumber(Math.round(documents / seconds));
    }
    const lag = lagged > 0 ? (stats.lag.sum_seconds - previous.lag.sum_seconds) / lagged : 0;
    push(history.lag, lag);
  }
  byId("lag").textContent = formatSeconds(stats.lag.mean_seconds);
  previous = stats;
}

function showStats(stats) {
  byId("stored").textContent = formatNumber(stats.statuses.stored);
  byId("queued").textContent = formatNumber(stats.statuses.queued);
  byId("failed").textContent = formatNumber(stats.statuses.failed);
  byId("processed").textContent = formatNumber(stats.workers && stats.workers.documents_processed);
  updateRates(stats);
  drawChart(byId("rate-chart"), history.rate, "line", (v) => `${v.toFixed(1)}/s`);
  drawChart(byId("lag-chart"), history.lag, "line", formatSeconds);
  const minutes = stats.throughput_per_minute.map((entry) => entry.documents);
  drawChart(byId("minutes-chart"), minutes, "bars", formatNumber);

  fillRows(
    byId("queues"),
    Object.entries(stats.queues).map(([queue, depth]) => [
      cell(queue),
      cell(formatNumber(depth), "number"),
    ]),
  );
  const categories = Object.entries(stats.categories);
  const most = Math.max(1, ...categories.map(([, count]) => count));
  fillRows(
    byId("categories"),
    categories.map(([category, count]) => {
      const meter = document.createElement("div");
      meter.className = "meter";
      meter.style.width = `${(100 * count) / most}%`;
      const bar = document.createElement("td");
      bar.append(meter);
      return [cell(category), cell(formatNumber(count), "number"), bar];
    }),
  );
  showDrift(stats.drift);
}

function formatShare(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
}

// Per model: how sure it was of what arrived, and how often people's labels agreed with it.
function showDrift(drift) {
  byId("drift-note").textContent =
    `under threshold: confidence below ${drift.low_confidence_threshold}; ` +
    `labels: each model's newest ${drift.agreement_window} at most`;
  fillRows(
    byId("drift"),
    drift.models.map((model) => [
      cell(model.model_version),
      cell(formatNumber(model.documents), "number"),
      cell(formatShare(model.mean_confidence), "number"),
      cell(formatShare(model.low_confidence_share), "number"),
      cell(formatNumber(model.labels), "number"),
      cell(formatShare(model.agreement), "number"),
    ]),
  );
}

function showFailures(failures) {
  const newestFirst = [...failures].reverse();
  fillRows(
    byId("failures"),
    newestFirst.map((failure) => [
      cell(new Date(failure.failed_at).toLocaleString()),
      cell(failure.id),
      cell(formatNumber(failure.attempts), "number"),
      cell(failure.error),
    ]),
  );
}

function showProblem(text) {
  const problem = byId("problem");
  problem.textContent = text;
  problem.hidden = !text;
}

async function poll() {
  try {
    const stats = await getJson("/stats");
    showStats(stats);
    const latest = Math.max(0, stats.statuses.failed - 10);
    showFailures(await getJson(`/failures?limit=10&offset=${latest}`));
    byId("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showProblem("");
    byId("login").hidden = true;
  } catch (error) {
    if (error instanceof Unauthorized) {
      byId("login").hidden = false;
      showProblem(error.message === "403" ? "this key lacks the read scope" : "API key needed");
    } else {
      showProblem(`cannot reach the service: ${error.message}`);
    }
  }
}

function start() {
  byId("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, byId("api-key").value.trim());
    byId("api-key").value = "";
    poll();
  });
  poll();
  timer = setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
window.addEventListener("pagehide", () => clearInterval(timer));
