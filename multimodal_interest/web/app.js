// The try-it page of `mmi serve`: search a platform's titles, build a history, ask for
// recommendations on another platform (with the history items behind each), and place the
// person on the map of users' interest vectors. It talks only to this service.
// Item titles are untrusted text: every string reaches the page through textContent or an
// attribute value, never as markup.
"use strict";

const state = { platforms: [], history: [], titles: new Map() };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = answer.detail;
    const reason = Array.isArray(detail)
      ? detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ")
      : detail || response.statusText;
    throw new Error(`${response.status}: ${reason}`);
  }
  return answer;
}

function status(id, text, kind) {
  const node = $(id);
  node.textContent = text;
  node.className = "status" + (kind ? " " + kind : "");
}

const key = (platform, itemId) => `${platform}\u0000${itemId}`;
const titleOf = (platform, itemId) => state.titles.get(key(platform, itemId)) || itemId;

// ------------------------------------------------------------------ platforms
async function loadPlatforms() {
  const info = await api("GET", "/platforms");
  state.platforms = info.platforms;
  const [source, target] = String((info.info || {}).task || "").split("->");
  fill($("source"), info.platforms.filter((p) => p.history), source);
  fill($("target"), info.platforms.filter((p) => p.target), target);
  const dataset = (info.info || {}).dataset;
  $("model").textContent = `Model ${info.model.slice(0, 19)}…` + (dataset ? ` · trained on ${dataset}` : "") +
    ` · ${info.platforms.map((p) => `${p.name}: ${p.n_items.toLocaleString("en")} items`).join(" · ")}`;
}

function fill(select, platforms, preferred) {
  select.replaceChildren(...platforms.map((p) => el("option", { value: p.name }, p.name)));
  if (platforms.some((p) => p.name === preferred)) select.value = preferred;
}

// ------------------------------------------------------------------ search and history
async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  const platform = $("source").value;
  if (!q) return;
  status("search-status", "Searching…");
  try {
    const params = new URLSearchParams({ platform, q, k: "8" });
    const answer = await api("GET", `/items/search?${params}`);
    for (const hit of answer.items) state.titles.set(key(platform, hit.item_id), hit.title);
    $("results").replaceChildren(...answer.items.map((hit) => resultRow(platform, hit)));
    const shown = answer.items.length < answer.matches ? ` (first ${answer.items.length})` : "";
    status("search-status", answer.matches ? `${answer.matches.toLocaleString("en")} match${answer.matches === 1 ? "" : "es"}${shown}`
      : `No ${platform} title holds “${q}”.`);
  } catch (error) {
    $("results").replaceChildren();
    status("search-status", `Search failed: ${error.message}`, "error");
  }
}

function resultRow(platform, hit) {
  const inHistory = state.history.some((h) => h.platform === platform && h.item_id === hit.item_id);
  const button = el("button", { type: "button", className: "add", onclick: () => add(platform, hit.item_id, button) },
    inHistory ? "Added" : "Add");
  button.disabled = inHistory;
  return el("li", { className: "result" }, el("span", { className: "title" }, hit.title),
    el("span", { className: "id" }, hit.item_id), button);
}

function add(platform, itemId, button) {
  if (!state.history.some((h) => h.platform === platform && h.item_id === itemId)) {
    state.history.push({ platform, item_id: itemId });
  }
  if (button) { button.textContent = "Added"; button.disabled = true; }
  drawHistory();
}

function remove(index) {
  state.history.splice(index, 1);
  drawHistory();
}

function drawHistory() {
  $("history").replaceChildren(...state.history.map((h, i) => el("li", { className: "entry" },
    el("span", { className: "title" }, titleOf(h.platform, h.item_id)),
    el("span", { className: "tag" }, h.platform),
    el("button", { type: "button", className: "remove", "aria-label": "remove", onclick: () => remove(i) }, "×"))));
  $("history-count").textContent = String(state.history.length);
  $("history-empty").hidden = state.history.length > 0;
  $("recommend").disabled = state.history.length === 0;
  if (state.history.length === 0) status("rec-status", "Add at least one item to your history.");
  else if ($("recs").hidden) status("rec-status", "Press Recommend.");
}

// ------------------------------------------------------------------ recommendations
async function recommend() {
  const platform = $("target").value;
  const k = Math.min(50, Math.max(1, parseInt($("k").value, 10) || 10));
  const history = state.history.slice();
  status("rec-status", "Computing…");
  try {
    const r = await api("POST", "/recommend", { history, platform, k, explain: 3 });
    for (const [p, titles] of Object.entries(r.titles || {})) {
      for (const [id, title] of Object.entries(titles)) state.titles.set(key(p, id), title);
    }
    drawRecommendations(r);
    await locate(history);
  } catch (error) {
    status("rec-status", `Recommendation failed: ${error.message}`, "error");
  }
}

function drawRecommendations(r) {
  const rows = r.items.map((item, i) => el("tr", { className: "rec" },
    el("td", { className: "rank" }, i + 1),
    el("td", { className: "title" }, titleOf(r.platform, item.item_id), el("span", { className: "id" }, item.item_id)),
    el("td", { className: "num score" }, item.score.toFixed(2)),
    el("td", { className: "because" }, ...(item.because.length ? item.because.map((c) => el("span", {
      className: "chip", title: `${titleOf(c.platform, c.item_id)}\nscore drop if left out: ${c.contribution.toFixed(3)}` },
      el("span", { className: "label" }, titleOf(c.platform, c.item_id)), el("small", {}, `+${c.contribution.toFixed(2)}`)))
      : [el("span", { className: "none" }, r.fallback ? "popularity" : "—")]))));
  $("recs").tBodies[0].replaceChildren(...rows);
  $("recs").hidden = false;
  const used = r.history ? r.history.used : 0;
  let note = `Top ${r.items.length} of ${r.platform} from ${used} history item${used === 1 ? "" : "s"}` +
    ` · scores are the model's logits; “because” lists the items whose removal lowers the score most`;
  if (r.fallback) note = "Nothing in the history carries interest: ranked by popularity.";
  status("rec-status", note);
}

// ------------------------------------------------------------------ map
async function loadMap() {
  try {
    state.map = await api("GET", "/map");
  } catch (error) {
    $("map-caption").textContent = `No map: ${error.message}`;
    $("map").hidden = true;
    return;
  }
  drawMap();
}

async function locate(history) {
  if (!state.map) return;
  const answer = await api("POST", "/users/map", { history });
  state.you = answer.point;
  drawMap();
}

function drawMap() {
  const map = state.map;
  const W = 480, H = 320, pad = 24;
  // The view spans the middle 98% of the users on each axis (and you): a few far-out users
  // would otherwise squeeze everyone else into a corner. Those outside it are not drawn.
  const [x0, x1] = extent(map.points.map((p) => p[0]), state.you && state.you[0]);
  const [y0, y1] = extent(map.points.map((p) => p[1]), state.you && state.you[1]);
  const sx = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / ((y1 - y0) || 1)) * (H - 2 * pad);
  const inside = map.points.filter(([x, y]) => x >= x0 && x <= x1 && y >= y0 && y <= y1);
  const nodes = [svg("rect", { x: 0, y: 0, width: W, height: H, class: "frame" })];
  for (const [x, y] of inside) nodes.push(svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.2, class: "user" }));
  if (state.you) {
    const [x, y] = state.you;
    const cx = sx(x), cy = sy(y);
    nodes.push(svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 11, class: "halo" }));
    nodes.push(svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 6, class: "you", "data-x": x, "data-y": y }));
    const right = cx < W - 60;
    nodes.push(svg("text", { x: (cx + (right ? 14 : -14)).toFixed(1), y: (cy + 4).toFixed(1), class: "you-label",
      "text-anchor": right ? "start" : "end" }, "you"));
  }
  const [ex, ey] = map.explained_variance.map((v) => `${(100 * v).toFixed(0)}%`);
  nodes.push(svg("text", { x: W - 8, y: H - 8, class: "axis", "text-anchor": "end" }, `PC1 (${ex} of variance) →`));
  nodes.push(svg("text", { x: 10, y: 16, class: "axis" }, `↑ PC2 (${ey})`));
  $("map").replaceChildren(...nodes);
  const off = map.points.length - inside.length;
  $("map-caption").textContent = `${map.users.toLocaleString("en")} users of the training data, each from their ` +
    `${map.source} history, projected onto the first two principal components of their interest vectors` +
    (off ? ` (${off} far-out one${off === 1 ? "" : "s"} beyond the edges).` : ".") +
    (state.you ? " The blue point is you." : " Ask for recommendations to see where you sit.");
}

function extent(values, you) {
  const sorted = values.slice().sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
  let [lo, hi] = sorted.length ? [at(0.01), at(0.99)] : [0, 1];
  const margin = 0.08 * ((hi - lo) || 1);
  [lo, hi] = [lo - margin, hi + margin];
  if (you !== undefined && you !== null) [lo, hi] = [Math.min(lo, you), Math.max(hi, you)];
  return [lo, hi];
}

// ------------------------------------------------------------------ start
async function start() {
  $("search-form").addEventListener("submit", search);
  $("recommend").addEventListener("click", recommend);
  $("source").addEventListener("change", () => { $("results").replaceChildren(); status("search-status", ""); });
  try {
    await loadPlatforms();
  } catch (error) {
    $("model").textContent = `The service did not answer: ${error.message}`;
    return;
  }
  drawHistory();
  await loadMap();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
