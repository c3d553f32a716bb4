// The 3D view both pages draw a result in: the viewer (view.js) and the single-file share
// page (share.js, built by pipeline/share.py). Spark renders the Gaussians in a three.js
// scene; the camera starts at the photo's own viewpoint and orbits with OrbitControls
// (mouse and touch); frames are drawn only while something changes.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer } from "@sparkjsdev/spark";

// Without a GPU the browser draws WebGL in software, a million Gaussians taking a minute
// a frame: then the page shows a thinned scene first (pipeline/browser.py).
export function softwareRendering(gl) {
  const info = gl.getExtension("WEBGL_debug_renderer_info");
  const renderer = gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER);
  return /swiftshader|llvmpipe|softpipe|software|basic render/i.test(String(renderer));
}

// Frames are drawn only for a while after something changed (a drag, a new splat, a
// resize): long enough for Spark's sort to catch up, then the page stops using the CPU
// (in software WebGL one frame takes half a second of it, which a rerun needs).
const REDRAW_MS = 1500;
const REDRAW_FRAMES = 3;
const redraw = { until: 0, frames: 0, drawn: [] };
export function wantFrames() {
  redraw.until = performance.now() + REDRAW_MS;
  redraw.frames = REDRAW_FRAMES;
}

// The scene in element `box`: our PLYs are in OpenCV camera axes (x right, y down, z
// forward); three.js looks down -z with y up, so the splat sits in a group turned half a
// turn about x. Null where the browser has no WebGL at all: the rest of the page still
// works.
export function makeView(box) {
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false });
  } catch (error) {
    return null;
  }
  const made = {
    box,
    renderer,
    scene: new THREE.Scene(),
    world: new THREE.Group(),
    camera: new THREE.PerspectiveCamera(50, 1, 0.01, 1000),
    mesh: null,
    wanted: null,
    budget: null,  // most Gaussians to fetch (software WebGL), null for all
    paused: false,  // true while something else draws the frames (clip.js)
  };
  made.scene.background = new THREE.Color("rgb(24, 26, 31)");
  made.world.rotation.x = Math.PI;
  // Spark sorts the Gaussians for a new view in a worker; when a sort lands after the
  // frames above, it says so (onDirty), and the new order is drawn.
  made.scene.add(new SparkRenderer({ renderer, onDirty: wantFrames }), made.world);
  made.box.prepend(renderer.domElement);
  made.controls = new OrbitControls(made.camera, renderer.domElement);
  made.controls.addEventListener("change", wantFrames);
  const resize = () => {
    const { clientWidth: w, clientHeight: h } = made.box;
    renderer.setSize(w, h, false);
    made.camera.aspect = w / Math.max(h, 1);
    made.camera.updateProjectionMatrix();
    wantFrames();
  };
  new ResizeObserver(resize).observe(made.box);
  resize();
  renderer.setAnimationLoop(() => {
    if (made.paused || (performance.now() > redraw.until && redraw.frames <= 0)) return;
    redraw.frames -= 1;
    renderer.render(made.scene, made.camera);
    for (const done of redraw.drawn.splice(0)) done();
  });
  return made;
}

// Put `mesh` (a loaded SplatMesh) in the view in place of the one shown; resolves once it
// is drawn.
export async function replaceMesh(view, mesh) {
  view.world.add(mesh);
  if (view.mesh) {
    view.world.remove(view.mesh);
    view.mesh.dispose();
  }
  view.mesh = mesh;
  await nextFrame();
}

// Resolves once a frame has been drawn with the scene as it is now.
function nextFrame() {
  wantFrames();
  return new Promise((done) => redraw.drawn.push(done));
}

// SHARP's source camera: at the photo's viewpoint, its vertical field of view, orbiting
// the scene's median depth (`camera`: {fov_deg, orbit_depth}, from pipeline/browser.py).
export function toPhotoViewpoint(view, camera) {
  if (!view) return;
  if (camera && camera.fov_deg) view.camera.fov = camera.fov_deg;
  view.camera.position.set(0, 0, 0);
  view.controls.target.set(0, 0, -((camera && camera.orbit_depth) || 1));
  view.camera.updateProjectionMatrix();
  view.controls.update();
  wantFrames();
}
