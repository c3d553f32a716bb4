// "Make a clip": a short camera move through the 3D view, rendered frame by frame at a
// fixed frame rate and encoded in the browser (WebCodecs), muxed into an MP4 (H.264) or,
// where the browser has no H.264 encoder, a WebM (VP9, VP8). Each frame's camera is set
// from its number, never from the clock: a slow GPU makes the export slower, never the
// clip choppier. Why in the browser and not on the server: docs/sharing.md.
import { ArrayBufferTarget as Mp4Target, Muxer as Mp4Muxer } from "./vendor/mp4-muxer/mp4-muxer.js";
import { ArrayBufferTarget as WebmTarget, Muxer as WebmMuxer } from "./vendor/webm-muxer/webm-muxer.js";
import { wantFrames } from "./scene.js";

export const FPS = 30;
export const SECONDS = { low: 3, high: 8, default: 4 };
const MAX_SIDE = 1280;  // a larger view is scaled down: 720p is plenty to send
const KEY_EVERY = 2 * FPS;
const BITS_PER_PIXEL = 0.15;  // per frame: about 4 Mbit/s at 1280 x 720

// Each move: the camera's offset from where it was when the clip began, for frame `i` of
// `n`, in that camera's own axes (`right`, `up`, `forward`, scaled by the distance `d` to
// the orbit centre, which it keeps looking at).
const WIGGLE_FRAMES = 4;  // frames per eye: about 7 switches a second
export const MOVES = {
  orbit: (i, n, d) => {  // one small loop, ending where it began
    const a = (2 * Math.PI * i) / n;
    return { right: 0.08 * d * Math.sin(a), up: 0.04 * d * (1 - Math.cos(a)), forward: 0 };
  },
  dolly: (i, n, d) => {  // eased in and out, a quarter of the way to the centre
    const u = n > 1 ? i / (n - 1) : 0;
    return { right: 0, up: 0, forward: 0.25 * d * (1 - Math.cos(Math.PI * u)) / 2 };
  },
  wiggle: (i, n, d) => {  // two viewpoints a little apart, in turn: stereo by motion
    const side = Math.floor(i / WIGGLE_FRAMES) % 2 === 0 ? -1 : 1;
    return { right: 0.02 * d * side, up: 0, forward: 0 };
  },
};

const FORMATS = [
  { type: "video/mp4", codecs: ["avc1.640028", "avc1.4d0028", "avc1.42001f"],
    muxer: (width, height) => new Mp4Muxer({
      target: new Mp4Target(), fastStart: "in-memory",
      video: { codec: "avc", width, height, frameRate: FPS } }) },
  { type: "video/webm", codecs: ["vp09.00.10.08", "vp8"],
    muxer: (width, height, codec) => new WebmMuxer({
      target: new WebmTarget(),
      video: { codec: codec === "vp8" ? "V_VP8" : "V_VP9", width, height, frameRate: FPS } }) },
];

// The first format and codec this browser encodes at this size.
async function encoderFor(width, height) {
  if (typeof VideoEncoder === "undefined") {
    throw new Error("this browser cannot encode video (WebCodecs: Chrome or Edge 94, " +
                    "Firefox 130, Safari 16.4 or later)");
  }
  const bitrate = Math.round(Math.max(1e6, width * height * FPS * BITS_PER_PIXEL));
  for (const format of FORMATS) {
    for (const codec of format.codecs) {
      const config = { codec, width, height, bitrate, framerate: FPS,
                       ...(codec.startsWith("avc1") ? { avc: { format: "avc" } } : {}) };
      const answer = await VideoEncoder.isConfigSupported(config).catch(() => null);
      if (answer && answer.supported) return { format, codec, config };
    }
  }
  throw new Error("this browser has no H.264, VP9 or VP8 encoder");
}

const even = (x) => Math.max(2, 2 * Math.floor(x / 2));

// Render `seconds` of `move` from the view's current camera and encode it; `progress(i, n)`
// after each frame. Resolves to {blob, type, codec, width, height, frames}. The view's
// camera is put back afterwards, whatever happens.
export async function makeClip(view, move, seconds, progress = () => {}) {
  const offset = MOVES[move];
  if (!offset) throw new Error(`no camera move called ${move}`);
  const frames = Math.round(seconds * FPS);
  const source = view.renderer.domElement;
  const scale = Math.min(1, MAX_SIDE / Math.max(source.width, source.height));
  const width = even(source.width * scale);
  const height = even(source.height * scale);
  const { format, codec, config } = await encoderFor(width, height);
  const muxer = format.muxer(width, height, codec);
  let failure = null;
  const encoder = new VideoEncoder({
    output: (chunk, meta) => muxer.addVideoChunk(chunk, meta),
    error: (error) => { failure = error; },
  });
  encoder.configure(config);
  const canvas = new OffscreenCanvas(width, height);
  const flat = canvas.getContext("2d");
  const camera = view.camera;
  const start = camera.position.clone();
  const target = view.controls.target.clone();
  const forward = target.clone().sub(start);
  const distance = forward.length();
  forward.normalize();
  const right = forward.clone().cross(camera.up).normalize();
  const up = right.clone().cross(forward);
  view.paused = true;
  try {
    for (let i = 0; i < frames; i++) {
      const o = offset(i, frames, distance);
      camera.position.copy(start).addScaledVector(right, o.right).addScaledVector(up, o.up)
        .addScaledVector(forward, o.forward);
      camera.lookAt(target);
      view.renderer.render(view.scene, camera);
      flat.drawImage(source, 0, 0, width, height);  // before the canvas is shown and cleared
      const frame = new VideoFrame(canvas, { timestamp: Math.round((i * 1e6) / FPS),
                                             duration: Math.round(1e6 / FPS) });
      encoder.encode(frame, { keyFrame: i % KEY_EVERY === 0 });
      frame.close();
      if (failure) throw failure;
      progress(i + 1, frames);
      // Let the page (and Spark's sorting worker) run; keep the encoder's queue short.
      do await new Promise((done) => setTimeout(done, 0));
      while (encoder.encodeQueueSize > 2);
    }
    await encoder.flush();
    if (failure) throw failure;
    muxer.finalize();
    return { blob: new Blob([muxer.target.buffer], { type: format.type }), type: format.type,
             codec, width, height, frames };
  } finally {
    if (encoder.state !== "closed") encoder.close();
    camera.position.copy(start);
    view.controls.target.copy(target);
    view.controls.update();
    view.paused = false;
    wantFrames();
  }
}
