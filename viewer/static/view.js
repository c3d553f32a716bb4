// The viewer: the splat (viser, in the iframe), the photo and depth beside it, and tuning.
// Apply writes the photo's sidecar; the server swaps the new result into the same scene
// (the camera stays where the user left it) and this page reports the time it took.
"use strict";

let name = new URLSearchParams(location.search).get("ply") || "";
let detail = null;
let applying = false;

// Without a GPU the browser draws WebGL in software, a million Gaussians taking a minute
// a frame: then the server sends a thinned scene first (the note offers all of it).
function softwareRendering() {
  try {
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) return true;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER);
    return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(String(renderer));
  } catch (error) {
    return false;
  }
}

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

function slider(spec, value) {
  const shown = el("span", { class: "value" });
  const input = el("input", { type: "range", id: spec.key, min: spec.low, max: spec.high,
                              step: spec.step });
  input.value = value ?? spec.low;
  const update = () => { shown.textContent = Number(input.value).toFixed(2); };
  input.addEventListener("input", update);
  update();
  const row = el("div", { class: "slider" },
    el("label", { for: spec.key }, spec.label, shown), input,
    el("div", { class: "help" }, spec.help));
  if (spec.key === "focal_mm") {
    const auto = el("input", { type: "checkbox", id: "focal_auto" });
    auto.checked = value === null || value === undefined;
    input.disabled = auto.checked;
    auto.addEventListener("change", () => { input.disabled = auto.checked; });
    row.append(el("label", {}, el("span", {}, auto, " from the photo (EXIF / depth model)")));
  }
  return row;
}

function renderControls(d) {
  const box = document.getElementById("controls");
  if (!d.tunable) {
    box.replaceChildren(el("div", { class: "dim" },
      "This result's photo is not in the inputs folder, so it cannot be tuned here."));
    return;
  }
  const sources = el("select", { id: "depth_source" },
    ...d.sources.map((s) => el("option", { value: s }, s)));
  sources.value = d.current.depth_source;
  box.replaceChildren(
    ...d.sliders.map((s) => slider(s, d.current[s.key])),
    el("div", { class: "slider" }, el("label", { for: "depth_source" }, "Depth source"), sources),
    el("button", { class: "primary", id: "apply", onclick: apply }, "Apply"),
    el("div", { class: "dim", id: "apply-note" },
      "Apply saves these values in the photo's sidecar (.toml); sharp-watch reruns the photo " +
      "(SHARP only: the depth is cached) and the new result replaces this view."));
}

function values() {
  const out = {};
  for (const spec of detail.sliders) out[spec.key] = Number(document.getElementById(spec.key).value);
  if (document.getElementById("focal_auto").checked) out.focal_mm = null;
  out.depth_source = document.getElementById("depth_source").value;
  return out;
}

async function apply() {
  const button = document.getElementById("apply");
  button.disabled = true;
  applying = true;
  const timing = document.getElementById("timing");
  try {
    const answer = await api("/api/apply", { ply: name, settings: values() });
    timing.className = "note";
    timing.textContent = `Saved ${answer.sidecar}; waiting for the new result...`;
  } catch (error) {
    timing.className = "note bad";
    timing.textContent = `Not applied: ${error.message}`;
    applying = false;
  }
  timing.hidden = false;
  button.disabled = false;
}

async function load(newName) {
  detail = await api(`/api/result?ply=${encodeURIComponent(newName)}`);
  name = detail.name;
  const frame = document.getElementById("scene");
  if (!frame.src && detail.viser_port) {
    frame.src = `http://127.0.0.1:${detail.viser_port}/`;  // viser binds 127.0.0.1 only
  }
  history.replaceState(null, "", `/view?ply=${encodeURIComponent(name)}${location.hash}`);
  document.getElementById("title").textContent = detail.photo || name;
  document.title = `${detail.photo || name} - sharp-watch`;
  const q = encodeURIComponent(name);
  document.getElementById("photo").src = `/files/photo?ply=${q}`;
  const preview = document.getElementById("preview");
  preview.hidden = !detail.has_preview;
  if (detail.has_preview) preview.src = `/files/preview?ply=${q}`;
  renderFacts(detail);
  if (!applying) renderControls(detail);
}

async function poll() {
  let state;
  try {
    state = await api("/api/state");
  } catch (error) {
    document.getElementById("scene-note").textContent = `The viewer stopped answering: ${error}`;
    return;
  }
  const thinned = document.getElementById("thinned");
  const total = detail && detail.gaussians;
  thinned.hidden = !(state.budget && state.shown_count && total && state.shown_count < total);
  if (!thinned.hidden) {
    document.getElementById("thinned-text").textContent =
      `This browser draws without a GPU (software WebGL), so the view shows ` +
      `${state.shown_count.toLocaleString()} of ${total.toLocaleString()} Gaussians to stay ` +
      "responsive.";
  }
  const sceneNote = document.getElementById("scene-note");
  sceneNote.hidden = !(state.loading || state.error);
  sceneNote.className = state.error ? "note bad" : "note";
  sceneNote.textContent = state.error ? `Cannot show this result: ${state.error}`
    : `Loading ${state.loading} into the 3D view...`;
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
  if (state.shown && state.shown !== name && !state.loading) {
    await load(state.shown);
    applying = false;
  }
}

async function start() {
  try {
    await load(name);
    const budget = softwareRendering() ? detail.software_budget : null;
    await api("/api/show", { ply: name, budget });
    document.getElementById("show-all").addEventListener("click", () => {
      api("/api/show", { ply: name, budget: null });
    });
  } catch (error) {
    document.getElementById("title").textContent = "Nothing to show";
    document.getElementById("scene-note").textContent = error.message;
    return;
  }
  poll();
  setInterval(poll, 400);
}

start();
