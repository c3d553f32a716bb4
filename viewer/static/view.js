// The viewer: the splat (Spark, a three.js renderer), the photo and depth beside it, and
// tuning. Apply writes the photo's sidecar; when the daemon's new result exists this page
// swaps it into the same scene (the camera stays where the user left it) and reports the
// time it took.
import { SplatFileType, SplatMesh } from "@sparkjsdev/spark";
import { makeView, replaceMesh, softwareRendering, toPhotoViewpoint } from "./scene.js";
import { FPS, SECONDS, makeClip } from "./clip.js";

let name = new URLSearchParams(location.search).get("ply") || "";
let detail = null;
let applying = false;

const view = makeView(document.getElementById("scene"));
window.sharpWatchView = view;  // for tests: the camera and what is drawn

// SHARP's source camera (scene.js), as the result's details give it.
function resetView() {
  toPhotoViewpoint(view, detail && detail.camera);
}
document.getElementById("reset-view").addEventListener("click", resetView);

// Fetch result `ply` (thinned to `view.budget` if set), put it in the scene in place of the
// one shown, and tell the server once it is drawn.
async function showSplat(ply) {
  if (!view) {
    throw new Error("this browser cannot draw WebGL (it is turned off, or no graphics " +
                    "driver is installed); the photo, depth and tuning still work");
  }
  view.wanted = ply;
  const note = document.getElementById("scene-note");
  note.hidden = false;
  note.className = "note";
  note.textContent = `Loading ${ply} into the 3D view...`;
  const query = `ply=${encodeURIComponent(ply)}` + (view.budget ? `&budget=${view.budget}` : "");
  const response = await request(`/files/splat?${query}`);
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new Error(error.error || `HTTP ${response.status}`);
  }
  const count = Number(response.headers.get("X-Gaussians"));
  const total = Number(response.headers.get("X-Gaussians-Total"));
  // Always our PLY layout, whatever the file's name says (`view OTHER.PLY` included).
  const mesh = new SplatMesh({ fileBytes: await response.arrayBuffer(),
                               fileType: SplatFileType.PLY });
  await mesh.initialized;
  if (view.wanted !== ply) {  // a newer result was asked for meanwhile
    mesh.dispose();
    return;
  }
  await replaceMesh(view, mesh);
  view.shown = { ply, count, total };
  note.hidden = true;
  const thinned = document.getElementById("thinned");
  thinned.hidden = !(count < total);
  document.getElementById("thinned-text").textContent =
    `This browser draws without a GPU (software WebGL), so the view shows ` +
    `${count.toLocaleString()} of ${total.toLocaleString()} Gaussians to stay responsive.`;
  await api("/api/shown", { ply, count });
}

function sceneError(error) {
  const note = document.getElementById("scene-note");
  note.hidden = false;
  note.className = "note bad";
  note.textContent = `Cannot show this result: ${error.message || error}`;
}

// Share and clips ----------------------------------------------------------------------

function shareNote(text, kind = "") {
  const note = document.getElementById("share-note");
  note.hidden = false;
  note.className = `note ${kind}`;
  note.textContent = text;
}

const shareFailed = (error) => shareNote(`Not done: ${error.message || error}`, "bad");

function renderTakeaways(d) {
  const links = takeawayLinks(name, d.takeaways, shareFailed);
  document.getElementById("takeaways").replaceChildren(
    ...(links.length ? [el("span", { class: "dim" }, "Download:"), ...links] : []));
}

async function refreshTakeaways() {
  renderTakeaways(await api(`/api/result?ply=${encodeURIComponent(name)}`));
}

async function shareClicked() {
  const button = document.getElementById("share");
  button.disabled = true;
  shareNote("Making the share page (a few seconds for a large photo)...");
  try {
    const page = await share(name);
    shareNote(`Downloaded ${page.file} (${(page.bytes / 1e6).toFixed(1)} MB): send it to ` +
              "anyone; it opens in any current browser, offline.", "good");
    await refreshTakeaways();
  } catch (error) {
    shareFailed(error);
  }
  button.disabled = false;
}

// Render the chosen move frame by frame (clip.js), then save it beside the result.
async function clipClicked() {
  const button = document.getElementById("make-clip");
  const move = document.getElementById("clip-move").value;
  const ply = name;  // the result shown now, even if an Apply swaps in another meanwhile
  const length = Number(document.getElementById("clip-seconds").value);
  button.disabled = true;
  const started = performance.now();
  try {
    if (!view || !view.shown) throw new Error("the 3D view has not drawn this result yet");
    const clip = await makeClip(view, move, length, (i, n) => {
      shareNote(`Rendering the clip: frame ${i} of ${n}...`);
    });
    shareNote("Saving the clip...");
    const response = await request(
      `/api/clip?ply=${encodeURIComponent(ply)}&move=${encodeURIComponent(move)}`,
      { method: "POST", headers: { "Content-Type": clip.type }, body: clip.blob });
    const saved = await response.json();
    if (!response.ok) throw new Error(saved.error || `HTTP ${response.status}`);
    shareNote(`Saved ${saved.file} beside the result: ${clip.frames} frames at ${FPS} fps, ` +
              `${clip.width} x ${clip.height}, ${(saved.bytes / 1e6).toFixed(1)} MB, made in ` +
              `${seconds((performance.now() - started) / 1000)}.`, "good");
    await refreshTakeaways();
  } catch (error) {
    shareFailed(error);
  }
  button.disabled = false;
}

const lengths = document.getElementById("clip-seconds");
for (let s = SECONDS.low; s <= SECONDS.high; s++) {
  lengths.append(el("option", { value: s }, `${s} s`));
}
lengths.value = SECONDS.default;
document.getElementById("share").addEventListener("click", shareClicked);
document.getElementById("make-clip").addEventListener("click", clipClicked);

function renderFacts(d) {
  const rows = [
    ["photo", d.photo], ["made", when(d.created)], ["Gaussians", d.gaussians],
    ["focal length", focal(d.focal)],
    ["depth", `${d.depth.source || "?"}, ${metres(d.depth.range_m)}` +
      (d.depth.from_cache ? " (cached)" : "")],
    ["time", `${seconds(d.seconds)} on ${d.device || "?"}`],
  ];
  document.getElementById("facts").replaceChildren(...rows.map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, v ?? "?"))),
    ...d.warnings.map((w) => el("tr", {}, el("td", {}, "warning"),
      el("td", { class: "warning" }, w))));
}

// The tuning controls are built from what the server sends for each key (`controls`):
// its kind, label, help, and range and step or options. Each control remembers the value
// it first showed, so Apply sends only the keys the user changed (one set back to its
// shown value is not sent): the others stay out of the sidecar and keep following the
// config's defaults.
function sliderControl(spec) {
  const shown = el("span", { class: "value" });
  const input = el("input", { type: "range", id: spec.key, min: spec.low, max: spec.high,
                              step: spec.step });
  input.value = spec.value ?? spec.low;
  const decimals = Math.max(0, Math.ceil(-Math.log10(spec.step)));
  const update = () => { shown.textContent = Number(input.value).toFixed(decimals); };
  input.addEventListener("input", update);
  update();
  const row = el("div", { class: "slider" },
    el("label", { for: spec.key }, spec.label, shown), input,
    el("div", { class: "help" }, spec.help));
  let unset = null;  // a key that may be left unset: a checkbox that unsets it
  if (spec.unset) {
    unset = el("input", { type: "checkbox", id: `${spec.key}_unset` });
    unset.checked = spec.value === null;
    input.disabled = unset.checked;
    unset.addEventListener("change", () => { input.disabled = unset.checked; });
    row.append(el("label", {}, el("span", {}, unset, ` ${spec.unset}`)));
  }
  const state = () => (unset && unset.checked ? null : input.value);
  const first = state();
  return {
    key: spec.key, row, changed: () => state() !== first,
    value: () => (state() === null ? null : Number(input.value)),
  };
}

function choiceControl(spec) {
  const input = el("select", { id: spec.key },
    ...spec.options.map((option) => el("option", { value: option }, option)));
  input.value = spec.value;
  const first = input.value;
  const row = el("div", { class: "slider" }, el("label", { for: spec.key }, spec.label), input,
    el("div", { class: "help" }, spec.help));
  return { key: spec.key, row, changed: () => input.value !== first, value: () => input.value };
}

const CONTROL_KINDS = { slider: sliderControl, choice: choiceControl };
let controls = [];

function renderControls(d) {
  const box = document.getElementById("controls");
  if (!d.tunable) {
    controls = [];
    box.replaceChildren(el("div", { class: "dim" },
      "This result's photo is not in the inputs folder, so it cannot be tuned here."));
    return;
  }
  controls = d.controls.map((spec) => CONTROL_KINDS[spec.kind](spec));
  box.replaceChildren(
    ...controls.map((control) => control.row),
    el("button", { class: "primary", id: "apply", onclick: apply }, "Apply"),
    el("div", { class: "dim", id: "apply-note" },
      "Apply saves the values you changed in the photo's sidecar (.toml); the others keep " +
      "following the config's defaults. sharp-watch reruns the photo (SHARP only: the depth " +
      "is cached) and the new result replaces this view."));
}

function changes() {
  const out = {};
  for (const control of controls) if (control.changed()) out[control.key] = control.value();
  return out;
}

async function apply() {
  const button = document.getElementById("apply");
  const timing = document.getElementById("timing");
  const settings = changes();
  timing.hidden = false;
  if (Object.keys(settings).length === 0) {
    timing.className = "note";
    timing.textContent = "Nothing to apply: no setting was changed.";
    return;
  }
  button.disabled = true;
  applying = true;
  try {
    const answer = await api("/api/apply", { ply: name, settings });
    timing.className = "note";
    if (answer.written.length === 0) {
      timing.textContent = "Nothing to apply: the photo already runs with these values.";
      applying = false;
    } else {
      timing.textContent = `Saved ${answer.written.join(", ")} in ${answer.sidecar}; ` +
        "waiting for the new result...";
    }
  } catch (error) {
    timing.className = "note bad";
    timing.textContent = `Not applied: ${error.message}`;
    applying = false;
  }
  button.disabled = false;
}

async function load(newName) {
  detail = await api(`/api/result?ply=${encodeURIComponent(newName)}`);
  name = detail.name;
  history.replaceState(null, "", `/view?ply=${encodeURIComponent(name)}${location.hash}`);
  document.getElementById("title").textContent = detail.photo || name;
  document.title = `${detail.photo || name} - sharp-watch`;
  const q = encodeURIComponent(name);
  const photo = document.getElementById("photo");
  photo.hidden = false;
  showImage(photo, `/files/photo?ply=${q}`).catch(() => { photo.hidden = true; });  // no photo
  const preview = document.getElementById("preview");
  preview.hidden = !detail.has_preview;
  if (detail.has_preview) {
    showImage(preview, `/files/preview?ply=${q}`).catch(() => { preview.hidden = true; });
  }
  renderFacts(detail);
  renderTakeaways(detail);
  if (!applying) renderControls(detail);
  if (detail.camera.error) throw new Error(detail.camera.error);
}

// A new result of the pending Apply: load its details and swap it in, camera kept.
async function swapIn(result) {
  if (view) view.wanted = result;  // tried once: a result that cannot be shown says so once
  // The details and the splat are fetched together: each is ready sooner than in turn.
  await Promise.all([load(result), view ? showSplat(result) : null]);
  applying = false;
}

let swapping = null;
const POLL_MS = 250;

async function poll() {
  let state;
  try {
    state = await api("/api/state?wait=1");  // held while an Apply waits: its result comes at once
  } catch (error) {
    document.getElementById("scene-note").textContent = `The viewer stopped answering: ${error}`;
    return;
  }
  const daemon = document.getElementById("daemon");
  const pending = state.pending;
  const waiting = pending && !pending.result && !pending.error;
  // Before any Apply, say so too when Apply could not rerun anything soon.
  const stalled = !state.daemon || ["paused", "error", "starting", "loading"]
    .includes(state.daemon.state);
  daemon.hidden = !(waiting || stalled);
  daemon.className = "note warn";
  daemon.textContent = waiting ? `${state.note} (waiting ${seconds(pending.waited)})`
    : state.note;
  const timing = document.getElementById("timing");
  if (pending && pending.error) {
    timing.hidden = false;
    timing.className = "note bad";
    timing.textContent = `${pending.photo} failed with these settings:\n${pending.error}`;
    applying = false;
  } else if (pending && pending.seconds !== null) {
    timing.hidden = false;
    timing.className = "note good";
    timing.textContent = `New view ${pending.seconds.toFixed(1)} s after Apply.`;
  }
  const current = view ? view.wanted : name;
  if (pending && pending.result && pending.result !== current && !swapping) {
    swapping = swapIn(pending.result).catch(sceneError).finally(() => { swapping = null; });
  }
}

async function start() {
  try {
    await load(name);
    if (view && softwareRendering(view.renderer.getContext())) {
      view.budget = detail.software_budget;
    }
    resetView();
    showSplat(name).catch(sceneError);
  } catch (error) {
    if (!detail) document.getElementById("title").textContent = "Nothing to show";
    sceneError(error);
  }
  document.getElementById("show-all").addEventListener("click", () => {
    if (view) view.budget = null;
    showSplat(name).catch(sceneError);
  });
  for (;;) {  // a poll at most every POLL_MS; one held by the server starts the next at once
    const started = performance.now();
    await poll();
    await new Promise((done) => setTimeout(done, POLL_MS - (performance.now() - started)));
  }
}

start();
