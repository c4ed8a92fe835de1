// The service's page: pick or drop a photo, choose a method and classes, see the explanation.
"use strict";

const $ = (id) => document.getElementById(id);
let photo = null;   // the chosen File
let model = null;   // GET /v1/model of the chosen model

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function option(select, value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  select.appendChild(item);
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function loadModel(name) {
  model = await getJSON("v1/model" + (name ? "?model=" + encodeURIComponent(name) : ""));
  const [h, w] = model.input_size;
  $("model-info").textContent = `${model.name}: ${model.num_classes} classes, ${w}×${h} input, layer ${model.layers.join(", ")}`;
  const methods = $("method");
  const previous = methods.value;
  methods.replaceChildren();
  for (const name of model.methods) option(methods, name, name);
  if (model.methods.includes(previous)) methods.value = previous;
  $("top-k").max = Math.min(5, model.num_classes);
  const labels = $("labels");
  labels.replaceChildren();
  (model.labels || []).forEach((label, index) => option(labels, `${index}: ${label}`, ""));
}

function targetIndex(text) {
  const match = /^\s*(\d+)/.exec(text);
  if (match) return match[1];
  const wanted = text.trim().toLowerCase();
  const index = (model.labels || []).findIndex((label) => label.toLowerCase() === wanted);
  if (index < 0) throw new Error(`no class named "${text.trim()}"`);
  return String(index);
}

function caption(figure, text) {
  const node = document.createElement("figcaption");
  node.textContent = text;
  figure.appendChild(node);
}

function show(answer) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of answer.predictions) {
    const item = document.createElement("li");
    item.textContent = `${p.label ?? p.class} (${(100 * p.prob).toFixed(1)} %)`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 100 * p.prob)}%`;
    item.appendChild(bar);
    list.appendChild(item);
  }
  const t = answer.time_ms;
  $("timing").textContent = `${t.total} ms on the server (run ${t.run} ms, batch of ${answer.batch_size})`;
  $("prediction").hidden = false;
  const overlays = $("overlays");
  overlays.replaceChildren();
  for (const e of answer.explanations) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "overlay";
    img.alt = `${e.method} for ${e.label ?? e.class}`;
    img.src = "data:image/png;base64," + e.overlay_png;
    figure.appendChild(img);
    caption(figure, `${e.method}: ${e.label ?? e.class} (${(100 * e.prob).toFixed(1)} %)` +
                    (e.zero_map ? " — nothing to show" : "") +
                    (e.box ? `, box ${e.box[0]},${e.box[1]} to ${e.box[2]},${e.box[3]}` : ""));
    overlays.appendChild(figure);
  }
}

let latest = 0;  // the newest explain request: an answer to an older one arrives stale

async function explain() {
  if (!photo) return;
  const ticket = ++latest;
  const form = new FormData();
  form.append("image", photo);
  form.append("method", $("method").value);
  if ($("boxes").checked) form.append("boxes", "1");
  if (model) form.append("model", model.name);
  try {
    if (document.querySelector("input[name=which]:checked").value === "class") {
      form.append("target", targetIndex($("target").value));
    } else {
      form.append("top_k", $("top-k").value);
    }
  } catch (error) {
    status(error.message, true);
    $("explain").disabled = false;  // an older request in flight no longer re-enables it
    return;
  }
  $("explain").disabled = true;
  status("explaining…");
  try {
    const response = await fetch("v1/explain", { method: "POST", body: form });
    const body = await response.json();
    if (ticket !== latest) return;  // a newer request was sent: its answer is the one shown
    if (!response.ok) throw new Error(body.error || response.statusText);
    show(body);
    status("");
  } catch (error) {
    if (ticket === latest) status(error.message, true);
  } finally {
    if (ticket === latest) $("explain").disabled = false;
  }
}

function choose(file) {
  if (!file) return;
  photo = file;
  $("photo").src = URL.createObjectURL(file);
  $("photo-figure").hidden = false;
  $("drop-hint").textContent = file.name;
  $("explain").disabled = false;
  explain();
}

async function start() {
  try {
    const listing = await getJSON("v1/models");
    if (listing.models.length > 1) {
      for (const m of listing.models) option($("model"), m.name, m.name);
      $("model-choice").hidden = false;
      $("model").addEventListener("change", () => loadModel($("model").value).then(explain));
    }
    await loadModel(listing.default);
  } catch (error) {
    status(error.message, true);
  }
  const drop = $("drop");
  $("file").addEventListener("change", () => choose($("file").files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  $("explain").addEventListener("click", explain);
  $("method").addEventListener("change", explain);
  $("boxes").addEventListener("change", explain);
  $("target").addEventListener("change", () => {
    document.querySelector("input[name=which][value=class]").checked = true;
    explain();
  });
  $("top-k").addEventListener("change", () => {
    document.querySelector("input[name=which][value=top]").checked = true;
    explain();
  });
}

start();
