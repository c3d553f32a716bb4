// The gallery: results newest first, one page at a time (the next page loads as the end of
// the list comes into view), failed photos, the queue. Every 2 s it asks the viewer
// whether anything changed since the version it shows, a small answer when nothing did;
// only then does it fetch the results again, down to the last one it shows, keeping the
// cards that did not change.
"use strict";

const POLL_MS = 2000;
const THUMB = 256; // thumbnails' long side, one of the server's sizes (viewer/thumbnails.py)
const shown = { version: null, last: null, more: false, cards: new Map() };
let queue = Promise.resolve();

// One request at a time: a page appended after the list changed could leave a gap.
function serial(task) {
  queue = queue.then(task, task);
  return queue;
}

// Thumbnails are fetched with the session token (`showImage`; an <img src> cannot send it),
// and only once a card nears the screen, as `loading="lazy"` would.
const nearScreen = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    nearScreen.unobserve(entry.target);
    showImage(entry.target, entry.target.dataset.src).catch(() => { entry.target.hidden = true; });
  }
}, { rootMargin: "800px" });

function thumbnail(path, name, alt, cls) {
  const img = el("img", { decoding: "async", alt, class: cls });
  img.dataset.src = `${path}?ply=${encodeURIComponent(name)}&size=${THUMB}`;
  nearScreen.observe(img);
  return img;
}

function card(result) {
  const warnings = result.warnings.map((w) => el("div", { class: "warning" }, "⚠ " + w));
  const timings = Object.entries(result.timings_s)
    .map(([stage, s]) => `${stage} ${s.toFixed(1)} s`).join(", ");
  return el("div", { class: "card", "data-name": result.name },
    el("div", { class: "pics" },
      thumbnail("/files/photo", result.name, "photo", "photo"),
      result.has_preview
        ? thumbnail("/files/preview", result.name, "depth preview", "preview")
        : el("div", { class: "dim" }, "no depth preview")),
    el("div", {}, el("b", {}, result.photo), " ", el("span", { class: "dim" }, when(result.created))),
    result.compare
      ? el("div", { class: "dim" }, `compare: ${result.compare.source}`)
      : null,
    el("table", { class: "facts" },
      el("tr", {}, el("td", {}, "focal length"), el("td", {}, focal(result.focal))),
      el("tr", {}, el("td", {}, "depth"),
        el("td", {}, `${result.depth.source || "?"}, ${metres(result.depth.range_m)}`)),
      el("tr", {}, el("td", {}, "tuned"),
        el("td", {}, Object.entries(result.tuned).map(([k, v]) => `${k} ${v}`).join(", ")
          || "no (defaults)")),
      el("tr", {}, el("td", {}, "time"),
        el("td", {}, `${seconds(result.seconds)} on ${result.device || "?"}`,
          el("div", { class: "dim" }, timings)))),
    ...warnings,
    el("div", { class: "links" },
      el("a", { href: viewLink(result.name), class: "view" }, "View"),
      el("a", { href: viewLink(result.name, "#tune"), class: "tune" }, "Tune"),
      el("a", { href: "#", onclick: (e) => { e.preventDefault(); api("/api/open-folder", {}); } },
        "Open folder"),
      el("button", { class: "share", onclick: (e) => shareCard(e.target, result.name),
                     title: "Download this 3D photo as one .html page anyone can open" },
        "Share")),
    el("div", { class: "takeaways" },
      result.takeaways.length ? el("span", { class: "dim" }, "Download:") : null,
      ...takeawayLinks(result.name, result.takeaways, (error) => cardNote(error, result.name))));
}

// A card's note (under its links), e.g. why a download failed.
function cardNote(text, name) {
  const node = document.querySelector(`.card[data-name="${CSS.escape(name)}"]`);
  if (!node) return;
  let note = node.querySelector(".card-note");
  if (!note) node.append(note = el("div", { class: "card-note dim" }));
  note.textContent = String(text.message || text);
}

// The share page of the card's result, made if it has none yet, downloaded. The gallery
// lists it with the card's other downloads at its next poll.
async function shareCard(button, name) {
  button.disabled = true;
  cardNote("Making the share page...", name);
  try {
    const page = await share(name);
    cardNote(`Downloaded ${page.file}`, name);
  } catch (error) {
    cardNote(`Not shared: ${error.message}`, name);
  }
  button.disabled = false;
}

// The card of `result`: the one already on the page if its facts are the same (its
// pictures stay loaded), else a new one.
function cardFor(result, previous) {
  const key = JSON.stringify(result);
  const old = previous.get(result.name);
  const node = old && old.key === key ? old.node : card(result);
  shown.cards.set(result.name, { key, node });
  return node;
}

// A compare set (one photo, several depth sources: `compare = [...]`) as one group of
// cards under its sources, its contact sheet as every card's depth picture. The server
// never splits a set between pages.
function grouped(results, previous) {
  const out = [];
  let group = null;
  for (const result of results) {
    const sheet = result.compare && result.compare.contact_sheet;
    if (sheet && group && group.sheet === sheet) {
      group.node.lastChild.append(cardFor(result, previous));
      continue;
    }
    if (!sheet) {
      group = null;
      out.push(cardFor(result, previous));
      continue;
    }
    const node = el("div", { class: "compare-set", "data-sheet": sheet },
      el("div", { class: "compare-title" },
        `${result.photo}: depth sources compared (${result.compare.sources.join(", ")})`),
      el("div", { class: "compare-cards" }, cardFor(result, previous)));
    group = { sheet, node };
    out.push(node);
  }
  return out;
}

function showStatus(data) {
  const daemon = document.getElementById("daemon");
  daemon.textContent = data.note;
  daemon.className = "note" + (data.daemon && data.daemon.state === "working" ? "" : " warn");
  const estimate = document.getElementById("estimate");
  estimate.textContent = data.estimate;
  estimate.hidden = !data.estimate;
}

function showFailures(data) {
  const more = data.failures_total - data.failures.length;
  document.getElementById("failures-title").hidden = data.failures_total === 0;
  document.getElementById("failures").replaceChildren(
    ...data.failures.map((f) => el("div", { class: "failure" }, el("b", {}, f.photo), "\n", f.text)),
    ...(more > 0 ? [el("p", { class: "dim" }, `and ${more} older, in the outputs folder`)] : []));
}

function showMore() {
  document.getElementById("more").hidden = !shown.more;
  // A fresh observation reports the end of the list if it is still in view (a short page).
  endWatcher.unobserve(document.getElementById("more"));
  endWatcher.observe(document.getElementById("more"));
}

// The results from the newest through the last one shown (a page at least), unless
// version `since` is still current.
async function load(since) {
  const query = new URLSearchParams();
  if (since !== null) query.set("since", since);
  if (shown.last) query.set("through", shown.last);
  const data = await api(`/api/gallery?${query}`);
  showStatus(data);
  if (data.unchanged) return;
  document.getElementById("folders").textContent =
    `inputs: ${data.inputs}   outputs: ${data.outputs}`;
  Object.assign(shown, { version: data.version, last: data.last, more: data.more });
  const previous = shown.cards;
  shown.cards = new Map();
  document.getElementById("cards").replaceChildren(...grouped(data.results, previous));
  document.getElementById("empty").hidden = data.results.length > 0;
  showFailures(data);
  showMore();
}

async function more() {
  if (!shown.more) return;
  const data = await api(`/api/gallery?after=${encodeURIComponent(shown.last)}`);
  showStatus(data);
  if (data.version !== shown.version) { // the list changed meanwhile: all of it again
    await load(null);
    return;
  }
  Object.assign(shown, { last: data.last, more: data.more });
  document.getElementById("cards").append(...grouped(data.results, new Map()));
  showMore();
}

function guarded(task) {
  return async () => {
    try {
      await task();
    } catch (error) {
      document.getElementById("daemon").textContent = `The viewer stopped answering: ${error}`;
    }
  };
}

const endWatcher = new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) serial(guarded(more));
}, { rootMargin: "800px" });

async function poll() {
  await serial(guarded(() => load(shown.version)));
  setTimeout(poll, POLL_MS);
}

poll();
