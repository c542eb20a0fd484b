"use strict";
// The cutfx demo page: upload, then show each result the moment its event arrives.
const $ = (id) => document.getElementById(id);
const LABELS = { cutout: "Cutout", color: "Color", enhancedblackwhite: "Black & white", popart: "Pop art", dithering: "Dithering" };
let stream = null;
let timer = null;
// Each result image's loading: "All done" waits for them, so it means everything is visible.
let shown = [];

function apiKey() { return $("apikey").value.trim(); }
// The key travels in a header only, never in a URL (URLs end up in logs and histories).
function authHeaders() { return apiKey() ? { Authorization: "Bearer " + apiKey() } : {}; }

// Server-Sent Events over fetch, so the key goes in a header (EventSource cannot send one).
// Reconnects with Last-Event-ID after a dropped connection; stops after job.finished.
function readEvents(url, handlers) {
  const controller = new AbortController();
  let lastId = "";
  let finished = false;
  const dispatch = (block) => {
    let type = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("id:")) lastId = line.slice(3).trim();
      else if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (data && handlers[type]) handlers[type]({ data });
    if (type === "job.finished") finished = true;
  };
  const connect = async () => {
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await fetch(url, { headers, signal: controller.signal });
    if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  };
  const run = async () => {
    for (let attempt = 0; !finished && !controller.signal.aborted && attempt < 20; attempt += 1) {
      try { await connect(); } catch (error) { if (controller.signal.aborted) return; }
      if (!finished) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  run();
  return { close: () => controller.abort() };
}

function showError(message) { $("error").textContent = message; $("error").hidden = !message; }

async function loadEffects() {
  const response = await fetch("/v1/effects");
  const { effects } = await response.json();
  for (const effect of effects) {
    const option = new Option(LABELS[effect.name] || effect.name, effect.name);
    $("primary").append(option);
  }
}

function card(name) {
  const element = document.createElement("article");
  element.className = "card pending";
  element.dataset.result = name;
  element.innerHTML = '<div class="frame"><div class="spinner" aria-label="working"></div></div>' +
    '<div class="meta"><span class="name"></span><span class="info">waiting…</span></div>';
  element.querySelector(".name").textContent = LABELS[name] || name;
  return element;
}

function formatBytes(bytes) { return bytes > 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.round(bytes / 1024) + " KB"; }

function showResult(name, result, seconds) {
  const element = document.querySelector(`[data-result="${name}"]`);
  if (!element) return;
  const frame = element.querySelector(".frame");
  const info = element.querySelector(".info");
  if (result.status !== "succeeded") {
    element.className = "card failed";
    frame.textContent = (result.error && result.error.message) || "failed";
    info.textContent = "failed";
    return;
  }
  const image = new Image();
  image.alt = LABELS[name] || name;
  image.src = result.url;
  image.addEventListener("load", () => element.classList.add("loaded"));
  shown.push(new Promise((resolve) => {
    image.addEventListener("load", resolve);
    image.addEventListener("error", resolve);
  }));
  frame.replaceChildren(image);
  element.className = "card done";
  const link = document.createElement("a");
  link.className = "download";
  link.href = result.url;
  link.download = name;
  link.textContent = "Download";
  info.textContent = `${seconds.toFixed(1)} s · ${formatBytes(result.bytes)}${result.cached ? " · cached" : ""}`;
  element.querySelector(".meta").append(link);
}

function follow(job, started) {
  const names = ["cutout", ...job.effects];
  $("results").replaceChildren(...names.map(card));
  let done = 0;
  shown = [];
  const progress = () => { $("bar").value = done / names.length; };
  if (stream) stream.close();
  const onResult = (event) => {
    const data = JSON.parse(event.data);
    done += 1;
    progress();
    showResult(data.name, data.result, (performance.now() - started) / 1000);
    $("status-text").textContent = `${done} of ${names.length} ready`;
  };
  stream = readEvents(job.links.events, {
    "job.started": () => { $("status-text").textContent = "Removing the background…"; },
    "result.succeeded": onResult,
    "result.failed": onResult,
    "job.finished": (event) => {
      const data = JSON.parse(event.data);
      stream.close();
      Promise.allSettled(shown).then(() => {
        clearInterval(timer);
        $("status-text").textContent = data.status === "succeeded" ? "All done" : `Finished: ${data.status}`;
        document.body.dataset.job = data.status;
      });
    },
  });
}

async function upload(file) {
  showError("");
  document.body.dataset.job = "running";
  const started = performance.now();
  $("progress").hidden = false;
  $("bar").value = 0;
  $("status-text").textContent = "Uploading…";
  clearInterval(timer);
  timer = setInterval(() => { $("elapsed").textContent = ((performance.now() - started) / 1000).toFixed(1) + " s"; }, 100);
  const form = new FormData();
  form.append("image", file);
  form.append("primary", $("primary").value);
  form.append("format", $("format").value);
  try {
    const response = await fetch("/v1/jobs", { method: "POST", body: form, headers: authHeaders() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    $("status-text").textContent = "Queued…";
    const job = await (await fetch(body.links.self, { headers: authHeaders() })).json();
    follow(job, started);
  } catch (error) {
    clearInterval(timer);
    $("progress").hidden = true;
    document.body.dataset.job = "error";
    showError(error.message);
  }
}

function setUp() {
  const zone = $("dropzone");
  $("file").addEventListener("change", () => { if ($("file").files[0]) upload($("file").files[0]); });
  for (const type of ["dragenter", "dragover"]) zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => { if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
  $("apikey").value = localStorage.getItem("cutfx-api-key") || "";
  $("apikey").addEventListener("change", () => localStorage.setItem("cutfx-api-key", apiKey()));
  // Tell the service an upload is coming, so a scaled-down GPU worker can wake (see /v1/warmup).
  zone.addEventListener("pointerenter", () => fetch("/v1/warmup", { method: "POST", headers: authHeaders() }).catch(() => {}), { once: true });
  loadEffects().catch((error) => showError("Could not load the effects: " + error.message));
}

setUp();
