// The gallery: every result newest first, failures, the queue; refreshed every 2 s.
"use strict";

let shownKey = "";

function card(result) {
  const warnings = result.warnings.map((w) => el("div", { class: "warning" }, "⚠ " + w));
  const timings = Object.entries(result.timings_s)
    .map(([stage, s]) => `${stage} ${s.toFixed(1)} s`).join(", ");
  return el("div", { class: "card", "data-name": result.name },
    el("div", { class: "pics" },
      picture(`/files/photo?ply=${encodeURIComponent(result.name)}`, { alt: "photo" }),
      result.has_preview
        ? picture(`/files/preview?ply=${encodeURIComponent(result.name)}`,
                  { alt: "depth preview", class: "preview" })
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
        "Open folder")));
}

// A compare set (one photo, several depth sources: `compare = [...]`) as one group of
// cards under its sources, its contact sheet as every card's depth picture.
function grouped(results) {
  const out = [];
  let group = null;
  for (const result of results) {
    const sheet = result.compare && result.compare.contact_sheet;
    if (sheet && group && group.sheet === sheet) {
      group.node.lastChild.append(card(result));
      continue;
    }
    if (!sheet) {
      group = null;
      out.push(card(result));
      continue;
    }
    const node = el("div", { class: "compare-set", "data-sheet": sheet },
      el("div", { class: "compare-title" },
        `${result.photo}: depth sources compared (${result.compare.sources.join(", ")})`),
      el("div", { class: "compare-cards" }, card(result)));
    group = { sheet, node };
    out.push(node);
  }
  return out;
}

async function refresh() {
  let data;
  try {
    data = await api("/api/gallery");
  } catch (error) {
    document.getElementById("daemon").textContent = `The viewer stopped answering: ${error}`;
    return;
  }
  document.getElementById("folders").textContent =
    `inputs: ${data.inputs}   outputs: ${data.outputs}`;
  const daemon = document.getElementById("daemon");
  daemon.textContent = data.note;
  daemon.className = "note" + (data.daemon && data.daemon.state === "working" ? "" : " warn");
  const estimate = document.getElementById("estimate");
  estimate.textContent = data.estimate;
  estimate.hidden = !data.estimate;
  const key = JSON.stringify([data.results.map((r) => r.name), data.failures]);
  if (key === shownKey) return;
  shownKey = key;
  document.getElementById("cards").replaceChildren(...grouped(data.results));
  document.getElementById("empty").hidden = data.results.length > 0;
  document.getElementById("failures-title").hidden = data.failures.length === 0;
  document.getElementById("failures").replaceChildren(...data.failures.map((f) =>
    el("div", { class: "failure" }, el("b", {}, f.photo), "\n", f.text)));
}

refresh();
setInterval(refresh, 2000);
