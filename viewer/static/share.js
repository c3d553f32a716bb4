// A shared 3D photo: the page pipeline/share.py writes, one file that opens from disk in
// any current browser with nothing to install and no network. The scene is embedded as a
// SOG (base64), and a thinned copy for browsers that draw without a GPU; the renderer is
// the viewer's own (scene.js: the same camera, orbit, zoom and touch).
import { SplatFileType, SplatMesh } from "@sparkjsdev/spark";
import { makeView, replaceMesh, softwareRendering, toPhotoViewpoint } from "./scene.js";

const facts = JSON.parse(document.getElementById("share-facts").textContent);
const note = document.getElementById("note");
const view = makeView(document.getElementById("scene"));
window.sharpWatchView = view;  // for tests: the camera and what is drawn

function say(text, kind = "") {
  note.hidden = !text;
  note.className = `note ${kind}`;
  note.textContent = text;
}

// The bytes of an embedded scene (a <script> element holding base64).
function embedded(id) {
  const text = document.getElementById(id).textContent.trim();
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// Draw embedded scene `id` (`count` Gaussians) in place of the one shown.
async function show(id, count) {
  const mesh = new SplatMesh({ fileBytes: embedded(id), fileType: SplatFileType.PCSOGSZIP });
  await mesh.initialized;
  await replaceMesh(view, mesh);
  view.shown = { count, total: facts.gaussians, drawnAt: performance.now() };
  // For tests and the bench, readable without running script in the page (which its
  // Content-Security-Policy forbids): what is drawn, and when (ms since the page opened).
  document.body.dataset.shown = count;
  document.body.dataset.drawnMs = view.shown.drawnAt.toFixed(0);
}

async function start() {
  if (!view) {
    say("This browser cannot draw WebGL (it is turned off, or no graphics driver is " +
        "installed), so the 3D photo cannot be shown here.", "bad");
    return;
  }
  toPhotoViewpoint(view, facts.camera);
  document.getElementById("reset-view").addEventListener(
    "click", () => toPhotoViewpoint(view, facts.camera));
  const thin = facts.thinned !== null && softwareRendering(view.renderer.getContext());
  say("Loading the 3D photo...");
  await show(thin ? "scene-thinned-sog" : "scene-sog", thin ? facts.thinned : facts.gaussians);
  say("");
  if (!thin) return;
  const all = document.getElementById("show-all");
  document.getElementById("thinned-text").textContent =
    `This browser draws without a GPU (software WebGL), so the view shows ` +
    `${facts.thinned.toLocaleString()} of ${facts.gaussians.toLocaleString()} Gaussians ` +
    "to stay responsive.";
  document.getElementById("thinned").hidden = false;
  all.addEventListener("click", () => {
    all.disabled = true;
    say("Loading every Gaussian (slow without a GPU)...");
    show("scene-sog", facts.gaussians).then(() => {
      document.getElementById("thinned").hidden = true;
      say("");
    }).catch(failed);
  });
}

function failed(error) {
  say(`Cannot show this 3D photo: ${error.message || error}`, "bad");
}

start().catch(failed);
