// The docingest review page: walks /review/queue (least confident first) and labels with
// PUT /documents/{id}/label, against the label's revision (If-Match) when it had one. Every string that comes from the service goes in with
// textContent, never as HTML.
"use strict";

const KEY_STORAGE = "docingest-api-key"; // the dashboard's: one key per tab for both pages
const PAGE_SIZE = 20;
const MAX_CHOICES = 9; // keys 1-9

const state = {
  buffer: [], // documents fetched, not yet shown
  cursor: null,
  exhausted: false,
  categories: [],
  current: null,
  reviewed: 0,
  agreed: 0,
  skipped: 0,
  busy: false,
};

function byId(id) {
  return document.getElementById(id);
}

class Unauthorized extends Error {}

async function call(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const options = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401 || response.status === 403) throw new Unauthorized(response.status);
  return response;
}

function showProblem(text) {
  const problem = byId("problem");
  problem.textContent = text;
  problem.hidden = !text;
}

function showFigures() {
  byId("reviewed").textContent = String(state.reviewed);
  byId("skipped").textContent = String(state.skipped);
  byId("agreement").textContent = state.reviewed
    ? `${Math.round((100 * state.agreed) / state.reviewed)}% (${state.agreed}/${state.reviewed})`
    : "–";
}

async function fetchMore() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.cursor) params.set("cursor", state.cursor);
  const response = await call("GET", `/review/queue?${params}`);
  if (!response.ok) throw new Error(`/review/queue answered ${response.status}`);
  const page = await response.json();
  state.buffer.push(...page.items);
  state.categories = page.categories;
  state.cursor = page.next_cursor;
  state.exhausted = page.next_cursor === null;
}

// The model's top 3 first (with their probabilities), then the other known categories.
function choicesFor(documentShown) {
  const top = (documentShown.alternatives || []).map((a) => ({
    category: a.category,
    probability: a.probability,
  }));
  const named = new Set(top.map((choice) => choice.category));
  const rest = state.categories.filter((c) => !named.has(c)).map((category) => ({ category }));
  return [...top, ...rest].slice(0, MAX_CHOICES);
}

function render() {
  const current = state.current;
  byId("review").hidden = current === null;
  byId("empty").hidden = current !== null;
  if (current === null) return;
  const confidence = current.confidence === null ? "–" : `${Math.round(current.confidence * 100)}%`;
  byId("meta").textContent =
    `${current.id} · version ${current.version} · model ${current.model_version} says ` +
    `${current.category} (${confidence})`;
  byId("content").textContent = current.content;
  byId("content").scrollTop = 0;
  byId("choices").replaceChildren(
    ...choicesFor(current).map((choice, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.category = choice.category;
      if (choice.category === current.category) button.className = "predicted";
      const key = document.createElement("kbd");
      key.textContent = String(index + 1);
      button.append(key, ` ${choice.category}`);
      if (choice.probability !== undefined) {
        const probability = document.createElement("span");
        probability.className = "probability";
        probability.textContent = `${Math.round(choice.probability * 100)}%`;
        button.append(probability);
      }
      button.addEventListener("click", () => accept(choice.category));
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
}

async function next() {
  if (state.buffer.length === 0 && !state.exhausted) await fetchMore();
  state.current = state.buffer.shift() || null;
  render();
}

async function guarded(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    await action();
    showProblem("");
    byId("login").hidden = true;
  } catch (error) {
    if (error instanceof Unauthorized) {
      byId("login").hidden = false;
      showProblem(error.message === "403" ? "this key lacks the label scope" : "API key needed");
    } else {
      showProblem(`cannot reach the service: ${error.message}`);
    }
  } finally {
    state.busy = false;
  }
}

function accept(category) {
  const current = state.current;
  if (!current || !category.trim()) return;
  guarded(async () => {
    const body = { category: category.trim(), version: current.version };
    // The precondition: the label read, by its revision; none when it had none (the queue's
    // documents), which the service refuses (409) if another reviewer labelled it meanwhile.
    const revision = current.label ? current.label.revision : null;
    const precondition = revision ? { "If-Match": `"${revision}"` } : {};
    const response = await call("PUT", `/documents/${current.id}/label`, body, precondition);
    if (response.ok) {
      state.reviewed += 1;
      if (category.trim() === current.category) state.agreed += 1;
    } else if (response.status === 409 || response.status === 404) {
      // Changed, deleted or labelled by someone else since it was read: not what was shown.
      state.skipped += 1;
    } else {
      throw new Error(`labelling answered ${response.status}`);
    }
    showFigures();
    await next();
  });
}

function skip() {
  if (!state.current) return;
  guarded(async () => {
    state.skipped += 1;
    showFigures();
    await next();
  });
}

function onKey(event) {
  if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (event.key >= "1" && event.key <= "9") {
    const button = byId("choices").querySelectorAll("button")[Number(event.key) - 1];
    if (button) accept(button.dataset.category);
  } else if (event.key === "s" || event.key === "ArrowRight") {
    skip();
  } else if (event.key === "n") {
    event.preventDefault();
    byId("category-name").focus();
  } else {
    return;
  }
  event.preventDefault();
}

function start() {
  byId("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, byId("api-key").value.trim());
    byId("api-key").value = "";
    guarded(next);
  });
  byId("new-category").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("category-name");
    accept(input.value);
    input.value = "";
    input.blur();
  });
  byId("skip").addEventListener("click", skip);
  document.addEventListener("keydown", onKey);
  showFigures();
  guarded(next);
}

document.addEventListener("DOMContentLoaded", start);
