// Shared by the gallery and the viewer: same-origin JSON calls and small formatters.
"use strict";

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
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
