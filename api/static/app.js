// The cutfx page: upload, then show each result the moment its event arrives. It uses the
// same JavaScript client (/v1/client.js) that shops load on their own pages.
import { createClient } from "/v1/client.js";

const $ = (id) => document.getElementById(id);
const LABELS = { cutout: "Cutout", color: "Color", enhancedblackwhite: "Black & white", popart: "Pop art", dithering: "Dithering" };
let current = null;
let timer = null;
let lastFile = null;
let runs = 0;
// Each result image's loading: "All done" waits for them, so it means everything is visible.
let shown = [];

function apiKey() { return $("apikey").value.trim(); }
// The key travels in a header only, never in a URL (URLs end up in logs and histories).
const cutfx = createClient({ credential: apiKey });

function showError(message) { $("error").textContent = message; $("error").hidden = !message; }

async function loadEffects() {
  const effects = await cutfx.effects();
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
  // The photo's checks are the same on every result: said once, under the cutout.
  if (name === "cutout" && result.checks && result.checks.length) {
    const notice = document.createElement("p");
    notice.className = "notice";
    notice.dataset.checks = result.checks.map((check) => check.code).join(" ");
    notice.textContent = result.checks.map((check) => check.message).join(" ");
    element.append(notice);
  }
}

// A run is one upload or re-style; changing an option mid-run starts a newer one, and only the
// newest may touch the page (an older job's late events would show stale results).
function superseded(run) { return run !== runs; }

// A superseded job's remaining results would never be shown: stop following it and cancel it.
function retire(job) {
  job.close();
  if (!job.finished) job.cancel().catch(() => {});
}

async function follow(job, started, run) {
  const names = ["cutout", ...job.body.effects];
  $("results").replaceChildren(...names.map(card));
  let done = 0;
  shown = [];
  for await (const event of job.events()) {
    if (superseded(run)) break;
    if (event.type === "job.started") $("status-text").textContent = "Removing the background…";
    if (event.type.startsWith("result.")) {
      done += 1;
      $("bar").value = done / names.length;
      showResult(event.data.name, event.data.result, (performance.now() - started) / 1000);
      $("status-text").textContent = `${done} of ${names.length} ready`;
    }
    if (event.type === "job.finished") {
      await Promise.allSettled(shown);
      if (superseded(run)) break;
      clearInterval(timer);
      const status = event.data.status;
      $("status-text").textContent = status === "succeeded" ? "All done" : `Finished: ${status}`;
      document.body.dataset.job = status;
    }
  }
}

// Background, crop and size: chosen before an upload, or after it to re-style the same photo
// (the cutout is cached, so that costs no model run).
function outputOptions() {
  return {
    background: $("background-on").checked ? $("background").value : undefined,
    crop: $("crop").checked ? true : undefined,
    size: $("size").value,
  };
}

async function upload(file) {
  lastFile = file;
  runs += 1;
  const run = runs;
  document.body.dataset.run = String(run);
  showError("");
  document.body.dataset.job = "running";
  const started = performance.now();
  $("progress").hidden = false;
  $("bar").value = 0;
  $("status-text").textContent = "Uploading…";
  clearInterval(timer);
  timer = setInterval(() => { $("elapsed").textContent = ((performance.now() - started) / 1000).toFixed(1) + " s"; }, 100);
  try {
    if (current) retire(current);
    const job = await cutfx.submit(file, { primary: $("primary").value, format: $("format").value, ...outputOptions() });
    if (superseded(run)) {
      retire(job);
      return;
    }
    current = job;
    $("status-text").textContent = "Queued…";
    await follow(job, started, run);
  } catch (error) {
    if (superseded(run)) return;
    clearInterval(timer);
    $("progress").hidden = true;
    document.body.dataset.job = "error";
    showError(error.message);
  }
}

function setUp() {
  const zone = $("dropzone");
  for (const id of ["background-on", "background", "crop", "size"]) {
    $(id).addEventListener("change", () => { if (lastFile) upload(lastFile); });
  }
  $("cancel").addEventListener("click", () => { if (current) current.cancel().catch((error) => showError(error.message)); });
  $("file").addEventListener("change", () => { if ($("file").files[0]) upload($("file").files[0]); });
  for (const type of ["dragenter", "dragover"]) zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => { if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
  $("apikey").value = localStorage.getItem("cutfx-api-key") || "";
  $("apikey").addEventListener("change", () => localStorage.setItem("cutfx-api-key", apiKey()));
  // Tell the service an upload is coming, so a scaled-down GPU worker can wake (see /v1/warmup).
  zone.addEventListener("pointerenter", () => cutfx.warmUp().catch(() => {}), { once: true });
  loadEffects().catch((error) => showError("Could not load the effects: " + error.message));
}

setUp();
