// Shared by the pages: calls to the viewer with this tab's session token, pictures fetched
// with it, and small formatters.
"use strict";

// The session token (`/open` puts it here). sessionStorage is kept apart by origin (which
// includes the port) and by tab, unlike cookies, which a browser sends to every port of
// 127.0.0.1; so no other program on this machine is ever sent the token.
const TOKEN_KEY = "sharp-watch-session";

function signedOut() {
  if (document.getElementById("signed-out")) return;
  document.body.prepend(el("div", { class: "note bad", id: "signed-out" },
    "This page is no longer connected to the viewer (it was restarted, or the page was " +
    "opened on its own). Open it again from the sharp-watch tray icon, or run " +
    "`sharp-watch gallery`."));
}

// fetch() with the token, never with cookies.
async function request(path, options = {}) {
  const headers = { ...(options.headers || {}),
                    Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  const response = await fetch(path, { ...options, headers, credentials: "omit",
                                       cache: "no-store" });
  if (response.status === 401) signedOut();
  return response;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await request(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

// Save the file at `path` (fetched with the token: a plain link cannot send it) in the
// user's downloads as `name`.
async function download(path, name) {
  const response = await request(path);
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new Error(error.error || `HTTP ${response.status}`);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Download `file`, one of result `ply`'s share page, clips and exports (`takeaways`).
function takeaway(ply, file) {
  return download(`/files/takeaway?ply=${encodeURIComponent(ply)}&file=${
    encodeURIComponent(file)}`, file);
}

// Share result `ply`: its share page (.html, made from the PLY first where it has none),
// downloaded to send to anyone. Resolves to the server's answer ({file, bytes}).
async function share(ply) {
  const page = await api("/api/share", { ply });
  await takeaway(ply, page.file);
  return page;
}

// Links downloading each of `files` of result `ply` (`takeaway`); `failed` is told why not.
function takeawayLinks(ply, files, failed) {
  return files.map((file) => el("a", {
    href: "#", class: "takeaway", "data-file": file,
    onclick: (e) => { e.preventDefault(); takeaway(ply, file).catch(failed); },
  }, file));
}

// Show the picture at `path` in `img` (an <img> cannot send the token itself): fetched,
// then shown from a blob URL, released once the picture is decoded.
async function showImage(img, path) {
  const response = await request(path);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  const release = () => URL.revokeObjectURL(url);
  img.addEventListener("load", release, { once: true });
  img.addEventListener("error", release, { once: true });
  img.src = url;
}

// A new <img> showing the picture at `path`; hidden if there is none.
function picture(path, attrs = {}) {
  const img = el("img", attrs);
  showImage(img, path).catch(() => { img.hidden = true; });
  return img;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "?";
  return value < 90 ? `${value.toFixed(1)} s` : `${(value / 60).toFixed(1)} min`;
}

function metres(range) {
  if (!range || range.length !== 2) return "?";
  return `${range[0].toFixed(2)} m to ${range[1].toFixed(2)} m`;
}

function focal(f) {
  if (!f || !f.f_px) return "?";
  return `${f.f_px.toFixed(0)} px (${f.origin || "?"})`;
}

function when(created) {
  const date = created ? new Date(created) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleString() : (created || "");
}

function viewLink(name, hash = "") {
  return `/view?ply=${encodeURIComponent(name)}${hash}`;
}
