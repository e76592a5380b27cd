// The l4p 4D viewer: reads the data that l4p_framework/viz/viewer.py embeds in viewer.html (a JSON
// header in <script id="l4p-header"> and base64 blobs in <script id="l4p-blob-NAME">) and shows the
// run in WebGL (three.js): per-frame point clouds, cameras and frustums, 3D track trails, the input
// frame with its 2D tracks, and the page's controls (element ids l4p-*, made in buildPage).
//
// World coordinates are those of the results: the first camera's frame, x right, y down, z forward
// (OpenCV), translations in the units the header states. Colours are sRGB bytes shown as they are
// (no colour management), so the points have the colours of the video's pixels.
//
// window.l4pViewer is a small hook for tests and scripts: ready, error, frame(), setFrame(i) -> Promise,
// settled() -> Promise (resolved after the next render with every pending frame image drawn), set(name, on),
// setView(eye, target) (world coordinates).

import {
  BufferAttribute,
  BufferGeometry,
  ColorManagement,
  DoubleSide,
  Float32BufferAttribute,
  Line,
  LineBasicMaterial,
  LinearFilter,
  LineSegments,
  Mesh,
  MeshBasicMaterial,
  PerspectiveCamera,
  Points,
  PointsMaterial,
  Scene,
  Texture,
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

ColorManagement.enabled = false; // colours are passed through as given (sRGB bytes in, sRGB out)

const BACKGROUND = 0x15171c;
const TRAIL_FRAMES = 12; // kept frames a track trail reaches back
const TOGGLES = ["points", "cameras", "frustums", "tracks", "motion", "accumulate"];

// ---------------------------------------------------------------------------------------------
// Data: header and binary blobs

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_CODES = (() => {
  const table = new Uint8Array(256).fill(255);
  for (let i = 0; i < BASE64.length; i++) table[BASE64.charCodeAt(i)] = i;
  return table;
})();

/** Bytes of a base64 text (whitespace ignored). */
function decodeBase64(text) {
  const clean = text.replace(/[^A-Za-z0-9+/]/g, "");
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let o = 0;
  for (let i = 0; i + 1 < clean.length; i += 4) {
    const a = BASE64_CODES[clean.charCodeAt(i)];
    const b = BASE64_CODES[clean.charCodeAt(i + 1)];
    const c = i + 2 < clean.length ? BASE64_CODES[clean.charCodeAt(i + 2)] : 0;
    const d = i + 3 < clean.length ? BASE64_CODES[clean.charCodeAt(i + 3)] : 0;
    const n = (a << 18) | (b << 12) | (c << 6) | d;
    if (o < out.length) out[o++] = (n >> 16) & 255;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}

const TYPED = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, float32: Float32Array };

/** The typed array of blob `name` (dtype and shape from the header), or null when absent. */
function blob(header, name) {
  const info = header.blobs[name];
  const element = document.getElementById(`l4p-blob-${name}`);
  if (!info || !element) return null;
  const bytes = decodeBase64(element.textContent);
  const Type = TYPED[info.dtype];
  if (!Type) throw new Error(`l4p viewer: blob ${name} has unknown dtype ${info.dtype}`);
  return new Type(bytes.buffer, 0, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}

// ---------------------------------------------------------------------------------------------
// Geometry helpers (world = first camera, OpenCV axes)

/** World position of camera-frame point (x, y, z) under a row-major camera-to-world 4x4 `m`. */
function toWorld(m, o, x, y, z) {
  return [
    m[o] * x + m[o + 1] * y + m[o + 2] * z + m[o + 3],
    m[o + 4] * x + m[o + 5] * y + m[o + 6] * z + m[o + 7],
    m[o + 8] * x + m[o + 9] * y + m[o + 10] * z + m[o + 11],
  ];
}

/** The 4 image corners of camera f at depth d, world coordinates: TL, TR, BR, BL. */
function frustumCorners(data, f, d) {
  const [fx, fy, cx, cy] = data.intrinsics.subarray(4 * f, 4 * f + 4);
  const [w, h] = [data.header.size[1], data.header.size[0]];
  return [
    [0, 0],
    [w, 0],
    [w, h],
    [0, h],
  ].map(([u, v]) => toWorld(data.poses, 16 * f, ((u - cx) / fx) * d, ((v - cy) / fy) * d, d));
}

function frustumSegments(data, f, d, out) {
  const centre = toWorld(data.poses, 16 * f, 0, 0, 0);
  const c = frustumCorners(data, f, d);
  for (let i = 0; i < 4; i++) out.push(...centre, ...c[i], ...c[i], ...c[(i + 1) % 4]);
  // a tick on the top edge: which way is up in the image
  const mid = c[0].map((v, k) => (v + c[1][k]) / 2);
  const up = toWorld(data.poses, 16 * f, 0, -1, 0).map((v, k) => v - centre[k]);
  out.push(...mid, ...mid.map((v, k) => v + up[k] * d * 0.15));
}

/** Hue-spread track colours (r, g, b in [0, 1]). */
function trackColors(n) {
  const colors = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    const h = (i * 0.618034) % 1;
    const k = (s) => (s + h * 6) % 6;
    const f = (s) => 0.95 - 0.85 * Math.max(0, Math.min(k(s), 4 - k(s), 1));
    colors.set([f(5), f(3), f(1)], 3 * i);
  }
  return colors;
}

// ---------------------------------------------------------------------------------------------
// The page

function element(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const child of children) e.appendChild(child);
  return e;
}

function buildPage(header) {
  const app = document.getElementById("l4p-app") || document.body.appendChild(element("div", { id: "l4p-app" }));
  const view = element("div", { id: "l4p-view3d" });
  const frameImage = element("img", { id: "l4p-frame", alt: "input frame" });
  const overlay = element("canvas", { id: "l4p-frame-overlay" });
  const toggles = TOGGLES.map((name) => {
    const box = element("input", { type: "checkbox", id: `l4p-toggle-${name}` });
    const label = {
      points: "point cloud",
      cameras: "camera path",
      frustums: "all frustums",
      tracks: "track trails",
      motion: "motion colouring",
      accumulate: "accumulate points",
    }[name];
    return element("label", { class: "l4p-toggle", for: `l4p-toggle-${name}` }, [box, element("span", { text: label })]);
  });
  const side = element("div", { id: "l4p-side" }, [
    element("div", { id: "l4p-title", text: header.name }),
    element("div", { id: "l4p-frame-wrap" }, [frameImage, overlay]),
    element("div", { id: "l4p-transport" }, [
      element("button", { id: "l4p-play", type: "button", text: "Play" }),
      element("input", { id: "l4p-slider", type: "range", min: "0", max: String(header.frames.length - 1), value: "0", step: "1" }),
    ]),
    element("div", { id: "l4p-frame-label" }),
    element("div", { id: "l4p-toggles" }, toggles),
    element("label", { id: "l4p-point-size-label", for: "l4p-point-size" }, [
      element("span", { text: "point size" }),
      element("input", { id: "l4p-point-size", type: "range", min: "-2", max: "2", value: "0", step: "0.25" }),
    ]),
    element("button", { id: "l4p-reset-view", type: "button", text: "Reset view" }),
    element("div", { id: "l4p-info" }),
    element("div", { id: "l4p-help", text: "drag: orbit · right-drag / shift-drag: pan · wheel: zoom · space: play · arrows: step" }),
  ]);
  app.append(view, side);
  return { app, view, frameImage, overlay };
}

// ---------------------------------------------------------------------------------------------

function start() {
  const header = JSON.parse(document.getElementById("l4p-header").textContent);
  const F = header.frames.length;
  const data = {
    header,
    poses: blob(header, "poses"),
    intrinsics: blob(header, "intrinsics"),
    jpegOffsets: blob(header, "jpeg_offsets"),
    jpegs: blob(header, "jpegs"),
  };
  const page = buildPage(header);
  const state = { frame: 0, playing: false, dirty: true, pending: 0, waiters: [], renders: 0 };
  for (const name of TOGGLES) state[name] = header.defaults[name] ?? false;

  // renderer, scene, camera
  const renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setClearColor(BACKGROUND, 1);
  renderer.domElement.id = "l4p-canvas";
  page.view.appendChild(renderer.domElement);
  const scene = new Scene();
  const camera = new PerspectiveCamera(header.view.fov || 50, 1, header.view.near, header.view.far);
  camera.up.set(0, -1, 0); // world y points down (OpenCV)
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = false;
  controls.screenSpacePanning = true;
  controls.addEventListener("change", () => requestRender());

  function setView(eye, target) {
    camera.position.set(...eye);
    controls.target.set(...target);
    camera.lookAt(...target);
    controls.update();
    requestRender();
  }
  const resetView = () => setView(header.view.eye, header.view.target);

  // point cloud: every kept frame's points in one buffer, frame f at offsets[f] .. offsets[f + 1]
  let cloud = null;
  let rgb = null;
  let motionRgb = null;
  const offsets = blob(header, "point_offsets");
  if (header.points && offsets) {
    const q = blob(header, "point_positions");
    const [lo, hi] = [header.points.bboxMin, header.points.bboxMax];
    const positions = new Float32Array(q.length);
    for (let i = 0; i < q.length; i += 3) {
      for (let k = 0; k < 3; k++) positions[i + k] = lo[k] + (q[i + k] / 65535) * (hi[k] - lo[k]);
    }
    rgb = new BufferAttribute(blob(header, "point_colors"), 3, true);
    const motion = blob(header, "point_motion");
    if (motion) {
      const colors = rgb.array;
      const tinted = new Uint8Array(colors.length);
      for (let p = 0; p < motion.length; p++) {
        const grey = 0.3 * colors[3 * p] + 0.59 * colors[3 * p + 1] + 0.11 * colors[3 * p + 2];
        if (motion[p] >= 128) tinted.set([255, 60 + 0.25 * grey, 40], 3 * p);
        else tinted.set([0.2 * grey + 60, 0.2 * grey + 80, 0.25 * grey + 110], 3 * p);
      }
      motionRgb = new BufferAttribute(tinted, 3, true);
    }
    const geometry = new BufferGeometry();
    geometry.setAttribute("position", new BufferAttribute(positions, 3));
    geometry.setAttribute("color", rgb);
    geometry.computeBoundingSphere();
    // PointsMaterial scales `size` by (half the viewport height) / depth: a world footprint over tan(fov / 2)
    const size = header.points.pointSize / Math.tan((camera.fov * Math.PI) / 360);
    const material = new PointsMaterial({ size, vertexColors: true, sizeAttenuation: true });
    material.userData.baseSize = size;
    cloud = new Points(geometry, material);
    cloud.frustumCulled = false;
    scene.add(cloud);
  }

  // cameras: all frustums (faint), the path of centres, the current frustum with its image
  const d = header.cameras.size;
  const allFrustums = [];
  const centres = [];
  for (let f = 0; f < F; f++) {
    frustumSegments(data, f, d, allFrustums);
    centres.push(...toWorld(data.poses, 16 * f, 0, 0, 0));
  }
  const frustums = new LineSegments(
    new BufferGeometry().setAttribute("position", new Float32BufferAttribute(allFrustums, 3)),
    new LineBasicMaterial({ color: 0x7d8799, transparent: true, opacity: 0.45 }),
  );
  scene.add(frustums);
  const path = new Line(
    new BufferGeometry().setAttribute("position", new Float32BufferAttribute(centres, 3)),
    new LineBasicMaterial({ color: 0x4fc3f7 }),
  );
  scene.add(path);
  const current = new LineSegments(new BufferGeometry(), new LineBasicMaterial({ color: 0xffb300 }));
  scene.add(current);
  const texture = new Texture();
  texture.generateMipmaps = false;
  texture.minFilter = LinearFilter;
  const imagePlane = new Mesh(
    new BufferGeometry(),
    new MeshBasicMaterial({ map: texture, side: DoubleSide, transparent: true, opacity: 0.9 }),
  );
  imagePlane.visible = false;
  scene.add(imagePlane);

  function updateCurrentCamera(f) {
    const segments = [];
    frustumSegments(data, f, d * 1.3, segments);
    current.geometry.setAttribute("position", new Float32BufferAttribute(segments, 3));
    const c = frustumCorners(data, f, d * 1.3);
    imagePlane.geometry.setAttribute("position", new Float32BufferAttribute([...c[0], ...c[1], ...c[2], ...c[3]], 3));
    imagePlane.geometry.setAttribute("uv", new Float32BufferAttribute([0, 1, 1, 1, 1, 0, 0, 0], 2));
    imagePlane.geometry.setIndex([0, 3, 1, 1, 3, 2]);
  }

  // tracks: 2D positions (F, N, 2) in output pixels, visibility (F, N) uint8 p * 255, world (F, N, 3)
  const tracks = header.tracks
    ? { n: header.tracks.count, xy: blob(header, "tracks_2d"), vis: blob(header, "tracks_visibility"), xyz: blob(header, "tracks_3d") }
    : null;
  let trails = null;
  let heads = null;
  let colors = null;
  if (tracks) {
    colors = trackColors(tracks.n);
    if (tracks.xyz) {
      trails = new LineSegments(new BufferGeometry(), new LineBasicMaterial({ vertexColors: true }));
      heads = new Points(new BufferGeometry(), new PointsMaterial({ size: 6, sizeAttenuation: false, vertexColors: true }));
      trails.frustumCulled = heads.frustumCulled = false;
      scene.add(trails, heads);
    }
  }

  function updateTracks3d(f) {
    if (!trails) return;
    const { n, xyz, vis } = tracks;
    const seg = [];
    const segColors = [];
    const dots = [];
    const dotColors = [];
    for (let i = 0; i < n; i++) {
      const at = (g) => xyz.subarray(3 * (g * n + i), 3 * (g * n + i) + 3);
      // only where the point is visible: the depth of a hidden point is a guess
      const seen = (g) => vis[g * n + i] >= 128 && !Number.isNaN(xyz[3 * (g * n + i)]);
      for (let g = Math.max(1, f - TRAIL_FRAMES + 1); g <= f; g++) {
        if (!seen(g - 1) || !seen(g)) continue;
        const [a, b] = [at(g - 1), at(g)];
        const fade = 0.25 + (0.75 * (g - f + TRAIL_FRAMES)) / TRAIL_FRAMES;
        seg.push(...a, ...b);
        for (let k = 0; k < 2; k++) segColors.push(colors[3 * i] * fade, colors[3 * i + 1] * fade, colors[3 * i + 2] * fade);
      }
      if (seen(f)) {
        dots.push(...at(f));
        dotColors.push(colors[3 * i], colors[3 * i + 1], colors[3 * i + 2]);
      }
    }
    trails.geometry.dispose();
    trails.geometry = new BufferGeometry();
    trails.geometry.setAttribute("position", new Float32BufferAttribute(seg, 3));
    trails.geometry.setAttribute("color", new Float32BufferAttribute(segColors, 3));
    heads.geometry.dispose();
    heads.geometry = new BufferGeometry();
    heads.geometry.setAttribute("position", new Float32BufferAttribute(dots, 3));
    heads.geometry.setAttribute("color", new Float32BufferAttribute(dotColors, 3));
  }

  function drawOverlay(f) {
    const canvas = page.overlay;
    const img = page.frameImage;
    const [h, w] = header.size;
    // drawn at the size shown (not the JPEG's), so that trails stay thin on small frames
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round((img.clientWidth || header.image.width) * ratio));
    canvas.height = Math.max(1, Math.round((img.clientHeight || header.image.height) * ratio));
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!tracks || !state.tracks) return;
    const sx = canvas.width / w;
    const sy = canvas.height / h;
    const { n, xy, vis } = tracks;
    const css = (i, a) => `rgba(${Math.round(colors[3 * i] * 255)},${Math.round(colors[3 * i + 1] * 255)},${Math.round(colors[3 * i + 2] * 255)},${a})`;
    ctx.lineWidth = Math.max(1, canvas.width / 300);
    const radius = Math.max(2, canvas.width / 100);
    for (let i = 0; i < n; i++) {
      const at = (g) => [xy[2 * (g * n + i)] * sx, xy[2 * (g * n + i) + 1] * sy];
      ctx.strokeStyle = css(i, 0.8);
      ctx.beginPath();
      let drawing = false;
      for (let g = Math.max(0, f - TRAIL_FRAMES + 1); g <= f; g++) {
        const [x, y] = at(g);
        if (Number.isNaN(x)) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      }
      ctx.stroke();
      const [x, y] = at(f);
      if (Number.isNaN(x)) continue;
      ctx.beginPath();
      ctx.arc(x, y, radius, 0, 2 * Math.PI);
      if (vis[f * n + i] >= 128) {
        ctx.fillStyle = css(i, 1);
        ctx.fill();
      } else {
        ctx.strokeStyle = css(i, 1);
        ctx.stroke();
      }
    }
  }

  // frame images: JPEG bytes f at jpegOffsets[f] .. jpegOffsets[f + 1], shown through object URLs
  const urls = new Array(F).fill(null);
  function frameUrl(f) {
    if (!urls[f]) {
      const bytes = data.jpegs.subarray(data.jpegOffsets[f], data.jpegOffsets[f + 1]);
      urls[f] = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
    }
    return urls[f];
  }
  // each frame is decoded into a fresh <img> that replaces the shown one and becomes the texture of
  // the current frustum: never an image that is still loading (WebGL would get a 0 x 0 texture)
  let imageToken = 0;
  function showImage(f) {
    const token = ++imageToken;
    state.pending++;
    const img = new Image();
    const done = (ok) => {
      state.pending--;
      if (ok && token === imageToken) {
        img.id = "l4p-frame";
        img.alt = `input frame ${header.frames[f]}`;
        page.frameImage.replaceWith(img);
        page.frameImage = img;
        texture.image = img;
        texture.needsUpdate = true;
        imagePlane.visible = state.cameras;
        drawOverlay(f);
      }
      requestRender();
    };
    img.onload = () => done(true);
    img.onerror = () => {
      console.error(`l4p viewer: the image of frame ${header.frames[f]} could not be decoded`);
      done(false);
    };
    img.src = frameUrl(f);
  }

  function applyVisibility() {
    const f = state.frame;
    if (cloud) {
      cloud.visible = state.points;
      const end = offsets[f + 1];
      const begin = state.accumulate ? 0 : offsets[f];
      cloud.geometry.setDrawRange(begin, end - begin);
      // the size slider scales by 2^value; accumulated frames are denser: half the size
      const scale = 2 ** Number(document.getElementById("l4p-point-size").value) * (state.accumulate ? 0.5 : 1);
      cloud.material.size = cloud.material.userData.baseSize * scale;
      const wanted = state.motion && motionRgb ? motionRgb : rgb;
      if (cloud.geometry.getAttribute("color") !== wanted) cloud.geometry.setAttribute("color", wanted);
    }
    path.visible = current.visible = state.cameras;
    imagePlane.visible = state.cameras && texture.image !== null && texture.image !== undefined;
    frustums.visible = state.frustums;
    if (trails) trails.visible = heads.visible = state.tracks;
    drawOverlay(f);
    requestRender();
  }

  const slider = document.getElementById("l4p-slider");
  const label = document.getElementById("l4p-frame-label");
  const info = document.getElementById("l4p-info");
  function setFrame(f) {
    f = Math.max(0, Math.min(F - 1, Math.round(f)));
    state.frame = f;
    slider.value = String(f);
    const count = cloud ? (state.accumulate ? offsets[f + 1] : offsets[f + 1] - offsets[f]) : 0;
    label.textContent = `frame ${header.frames[f] + 1} of ${header.numFrames}` + (cloud ? ` · ${count.toLocaleString("en")} points shown` : "");
    updateCurrentCamera(f);
    updateTracks3d(f);
    showImage(f);
    applyVisibility();
  }

  // controls
  for (const name of TOGGLES) {
    const box = document.getElementById(`l4p-toggle-${name}`);
    const available = { points: !!cloud, motion: !!motionRgb, tracks: !!tracks, accumulate: !!cloud }[name] ?? true;
    box.checked = state[name] && available;
    state[name] = box.checked;
    box.disabled = !available;
    box.addEventListener("change", () => {
      state[name] = box.checked;
      if (name === "accumulate") setFrame(state.frame);
      else applyVisibility();
    });
  }
  slider.addEventListener("input", () => setFrame(Number(slider.value)));
  const pointSize = document.getElementById("l4p-point-size");
  pointSize.disabled = !cloud;
  pointSize.addEventListener("input", applyVisibility);
  const play = document.getElementById("l4p-play");
  let lastStep = 0;
  function setPlaying(on) {
    state.playing = on;
    play.textContent = on ? "Pause" : "Play";
    lastStep = performance.now();
    requestRender();
  }
  play.addEventListener("click", () => setPlaying(!state.playing));
  document.getElementById("l4p-reset-view").addEventListener("click", resetView);
  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLButtonElement) return;
    if (event.code === "Space") setPlaying(!state.playing);
    else if (event.code === "ArrowRight") setFrame(state.frame + 1);
    else if (event.code === "ArrowLeft") setFrame(state.frame - 1);
    else return;
    event.preventDefault();
  });

  const parts = [`${header.numFrames} frames at ${header.size[0]}x${header.size[1]}`];
  if (header.stride > 1) parts.push(`every ${header.stride}th shown`);
  if (cloud) parts.push(`${offsets[F].toLocaleString("en")} points (~${header.points.perFrame.toLocaleString("en")} a frame)`);
  if (tracks) parts.push(`${tracks.n} tracks${tracks.xyz ? "" : " (2D only)"}`);
  parts.push(`heads: ${header.heads.join(", ")}`);
  parts.push(header.units);
  info.textContent = parts.join(" · ");

  // rendering on demand
  function resize() {
    const rect = page.view.getBoundingClientRect();
    const [w, h] = [Math.max(1, Math.floor(rect.width)), Math.max(1, Math.floor(rect.height))];
    renderer.setSize(w, h, true);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
    drawOverlay(state.frame);
    requestRender();
  }
  function requestRender() {
    state.dirty = true;
  }
  function loop(now) {
    if (state.playing && now - lastStep >= 1000 / header.fps) {
      lastStep = now;
      setFrame((state.frame + 1) % F);
    }
    if (state.dirty) {
      state.dirty = false;
      renderer.render(scene, camera);
      state.renders++;
      if (state.pending === 0 && !state.dirty) {
        const waiters = state.waiters.splice(0);
        for (const resolve of waiters) resolve(state.renders);
        hook.ready = true;
      }
    }
    requestAnimationFrame(loop);
  }

  const hook = {
    ready: false,
    error: null,
    header,
    frame: () => state.frame,
    renders: () => state.renders,
    settled: () =>
      new Promise((resolve) => {
        state.waiters.push(resolve);
        requestRender();
      }),
    setFrame: (f) => {
      setFrame(f);
      return hook.settled();
    },
    setView: (eye, target) => {
      setView(eye, target ?? header.view.target);
      return hook.settled();
    },
    set: (name, on) => {
      const box = document.getElementById(`l4p-toggle-${name}`);
      if (box.checked !== on) box.click();
      return hook.settled();
    },
  };
  window.l4pViewer = hook;
  window.addEventListener("resize", resize);
  resize();
  resetView();
  setFrame(0);
  requestAnimationFrame(loop);
}

try {
  start();
} catch (error) {
  window.l4pViewer = { ready: false, error: String(error) };
  const app = document.getElementById("l4p-app") || document.body;
  app.appendChild(element("pre", { id: "l4p-error", text: `l4p viewer failed: ${error}` }));
  throw error;
}
