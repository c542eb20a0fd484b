// cutfx JavaScript client: an ES module with no build step, served at /v1/client.js.
//
//   import { createClient, showResults } from "https://cutfx.example/v1/client.js";
//   const cutfx = createClient({ baseUrl: "https://cutfx.example", credential: token });
//   const job = await cutfx.submit(file, { effects: ["popart", "color"] });
//   const byAddress = await cutfx.submit("https://cdn.shop.example/rex.jpg");
//   for await (const event of job.events()) console.log(event.type, event.data);
//
// The credential (a client token from your server, never a secret key in a page) travels in
// the Authorization header only: event streams are read with fetch, not EventSource, so no
// credential ends up in a URL. Streams resume with Last-Event-ID after a dropped connection.

const FINISHED_EVENT = "job.finished";
const RESULT_EVENTS = ["result.succeeded", "result.failed", "result.canceled"];
const MAX_RECONNECTS = 20;
const DEFAULT_RETRY_MS = 1000;

/** An answer of the API that is not a success, in its error shape. */
export class CutfxError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.name = "CutfxError";
    this.status = status;
    this.code = (error && error.code) || "http_error";
    this.field = error && error.field;
  }
}

async function checked(response) {
  if (response.ok) return response.status === 204 ? null : response.json();
  let body = null;
  try { body = await response.json(); } catch { /* not our error shape */ }
  throw new CutfxError(response.status, body && body.error);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Parse one Server-Sent Events block into { id, type, data } (data JSON-decoded). */
function parseBlock(block) {
  const event = { id: "", type: "message", data: "", retry: null };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
  }
  return event;
}

/**
 * The events of a stream URL, as an async iterator; reconnects with Last-Event-ID and ends
 * after job.finished, when `signal` aborts, or after MAX_RECONNECTS failed connections.
 */
export async function* readEvents(url, { headers = async () => ({}), signal, lastEventId = "" } = {}) {
  let retryMs = DEFAULT_RETRY_MS;
  for (let failures = 0; failures <= MAX_RECONNECTS && !(signal && signal.aborted);) {
    let response;
    try {
      const sent = { ...(await headers()), Accept: "text/event-stream" };
      if (lastEventId) sent["Last-Event-ID"] = lastEventId;
      response = await fetch(url, { headers: sent, signal });
    } catch (error) {
      if (signal && signal.aborted) return;
      failures += 1;
      await sleep(retryMs, signal);
      continue;
    }
    if (!response.ok) await checked(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.retry !== null) retryMs = event.retry;
          if (!event.data) continue;
          if (event.id) lastEventId = event.id;
          failures = 0;
          yield { id: event.id, type: event.type, data: JSON.parse(event.data) };
          if (event.type === FINISHED_EVENT) return;
        }
      }
    } catch (error) {
      if (signal && signal.aborted) return;
    }
    failures += 1;
    await sleep(retryMs, signal);
  }
}

/** A submitted job: its first answer, its events, and a way to cancel it. */
class Job {
  constructor(client, body) {
    this.client = client;
    this.id = body.id;
    this.status = body.status;
    this.links = body.links;
    this.body = body;
    this.finished = body.status !== "queued" && body.status !== "running";
    this.controller = new AbortController();
  }

  /** The job's events ({ id, type, data }) from the first, ending after job.finished. */
  async *events() {
    if (this.finished && this.body.results) {
      // Everything came from the cache: replay the results as events.
      for (const [name, result] of Object.entries(this.body.results)) {
        yield { id: "", type: `result.${result.status}`, data: { name, result } };
      }
      yield { id: "", type: FINISHED_EVENT, data: { status: this.body.status } };
      return;
    }
    const headers = () => this.client.authHeaders();
    for await (const event of readEvents(this.links.events, { headers, signal: this.controller.signal })) {
      if (event.type === FINISHED_EVENT) {
        this.finished = true;
        this.status = event.data.status;
        this.client.forget(this);
      }
      yield event;
    }
  }

  /** The job as it is now. */
  async get() {
    return checked(await fetch(this.links.self, { headers: await this.client.authHeaders() }));
  }

  /** Cancel what has not finished; finished results stay downloadable. */
  async cancel({ keepalive = false } = {}) {
    const response = await fetch(this.links.self, {
      method: "DELETE",
      headers: await this.client.authHeaders(),
      keepalive,
    });
    const body = await checked(response);
    this.finished = true;
    this.status = body.status;
    this.client.forget(this);
    return body;
  }

  /** Stop reading events (the job goes on). */
  close() { this.controller.abort(); }
}

/**
 * A client of the cutfx API at `baseUrl`. `credential` is a client token (or, on your own
 * server-side pages, an API key), or a function that returns one (it may be async).
 * Jobs still running when the page is left are canceled, unless `cancelOnLeave` is false.
 */
export function createClient({ baseUrl = "", credential = "", cancelOnLeave = true } = {}) {
  const base = baseUrl.replace(/\/$/, "");
  const running = new Set();

  const client = {
    async authHeaders() {
      const value = typeof credential === "function" ? await credential() : credential;
      return value ? { Authorization: "Bearer " + value } : {};
    },
    forget(job) { running.delete(job); },

    /** The effects and their parameters. */
    async effects() {
      return (await checked(await fetch(base + "/v1/effects"))).effects;
    },

    /** Tell the service an upload is coming, so a scaled-down GPU worker can wake. */
    async warmUp() {
      return checked(await fetch(base + "/v1/warmup", { method: "POST", headers: await client.authHeaders() }));
    },

    /**
     * Queue `photo`: a File or Blob, or the photo's address (a string or URL: http(s), or
     * gs:// for a bucket the service reads), which the service fetches. Options: effects
     * (array), primary, format, quality,
     * params (object by effect), background ("#rrggbb", "#rrggbbaa" or "blur"),
     * backgroundBlur, backgroundImage (a File or Blob), crop (boolean), cropMargin ("24px",
     * "10%"), size ("full", "preview" or a longest side), channels ("rgba" or "alpha"),
     * cancelAfter (seconds or "1m30s"), idempotencyKey.
     */
    async submit(photo, options = {}) {
      const form = new FormData();
      if (typeof photo === "string" || photo instanceof URL) form.append("image_url", String(photo));
      else form.append("image", photo, photo.name || "photo");
      if (options.effects) form.append("effects", options.effects.join(","));
      const fields = {
        primary: options.primary, format: options.format, quality: options.quality,
        background: options.background, background_blur: options.backgroundBlur,
        crop: options.crop, crop_margin: options.cropMargin, size: options.size,
        channels: options.channels,
      };
      for (const [name, value] of Object.entries(fields)) {
        if (value !== undefined && value !== null && value !== "") form.append(name, String(value));
      }
      if (options.params) form.append("params", JSON.stringify(options.params));
      if (options.backgroundImage) form.append("background_image", options.backgroundImage);
      const headers = await client.authHeaders();
      if (options.cancelAfter !== undefined) headers["Cancel-After"] = String(options.cancelAfter);
      if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
      const body = await checked(await fetch(base + "/v1/jobs", { method: "POST", body: form, headers }));
      const job = new Job(client, body);
      if (!job.finished) running.add(job);
      return job;
    },
  };

  if (cancelOnLeave && typeof window !== "undefined") {
    // keepalive lets the DELETE outlive the page that sends it.
    window.addEventListener("pagehide", () => {
      for (const job of running) job.cancel({ keepalive: true }).catch(() => {});
    });
  }
  return client;
}

/**
 * Show each result of `job` in `container` the moment it is ready: one <figure> per result
 * (data-result, data-status), an <img> when it succeeded. `onEvent` sees every event.
 * Resolves with the job's final status once every shown image has loaded.
 */
/**
 * The checks a result's cutout failed, as a notice under it (`<p class="cutfx-notice">`
 * with `data-checks` naming their codes): warnings the shop may show its customer, or a
 * failed strict cutout's reason.
 */
function showChecks(element, result) {
  const found = [...(result.checks || [])];
  if (result.error && result.error.code === "no_subject") found.push(result.error);
  if (found.length === 0) return;
  const notice = document.createElement("p");
  notice.className = "cutfx-notice";
  notice.dataset.checks = found.map((check) => check.code).join(" ");
  notice.textContent = found.map((check) => check.message).join(" ");
  element.append(notice);
}

export async function showResults(job, container, { labels = {}, onEvent = () => {} } = {}) {
  const figures = new Map();
  const loads = [];
  const figure = (name) => {
    if (!figures.has(name)) {
      const element = document.createElement("figure");
      element.dataset.result = name;
      element.dataset.status = "pending";
      const caption = document.createElement("figcaption");
      caption.textContent = labels[name] || name;
      element.append(caption);
      container.append(element);
      figures.set(name, element);
    }
    return figures.get(name);
  };
  for (const name of ["cutout", ...(job.body.effects || [])]) figure(name);
  let status = job.status;
  for await (const event of job.events()) {
    onEvent(event);
    if (RESULT_EVENTS.includes(event.type)) {
      const { name, result } = event.data;
      const element = figure(name);
      element.dataset.status = result.status;
      if (result.status === "succeeded") {
        const image = new Image();
        image.alt = labels[name] || name;
        loads.push(new Promise((resolve) => { image.onload = resolve; image.onerror = resolve; }));
        image.src = result.url;
        element.prepend(image);
      }
      showChecks(element, result);
    } else if (event.type === FINISHED_EVENT) {
      status = event.data.status;
    }
  }
  await Promise.all(loads);
  return status;
}
