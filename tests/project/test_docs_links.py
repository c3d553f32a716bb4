"""The docs hold together: every relative link in README.md and docs/*.md leads to a file
that exists and, with a `#fragment`, to a heading that exists (GitHub's anchor names);
and the README stays short enough for a photographer to finish."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")
INLINE_LINK = re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, each
    space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers; a repeated heading gets `-1`, `-2`... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    for _, line in prose(text):
        found.update(HTML_ANCHOR.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading[2])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline, image and reference link outside code."""
    found = []
    for number, line in prose(page.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        reference = REFERENCE_LINK.match(line)
        if reference:
            found.append((number, reference[1]))
    return found


def broken_links(page: Path) -> list[str]:
    """`page:line: target (why)` for every relative link that does not resolve."""
    broken = []
    for number, target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        why = None
        if not destination.exists():
            why = "no such file"
        elif fragment and destination.suffix != ".md":
            why = "an anchor into a file that is not markdown"
        elif fragment and fragment not in anchors(destination):
            why = f"no heading #{fragment} in {destination.name}"
        if why:
            broken.append(f"{page.name}:{number}: {target} ({why})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_pages_are_found_and_link_to_each_other() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/upstream-contract.md", "docs/development.md"} <= names
    readme_targets = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    missing = {f"docs/{p.name}" for p in PAGES[1:]} - readme_targets
    assert missing == set(), "every docs page is reachable from the README"


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert command.startswith("python -m pip install -e ")
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert command in readme, "the README shows the command CI runs, on a line of its own"


def test_a_broken_file_or_anchor_is_reported_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Same name\n\n## Same name\n\n### `code` and (brackets): yes!\n"
        '\n<a name="kept"></a>\n', encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# Page",
        "[ok](other.md) [ok](other.md#other-page) [ok](other.md#same-name-1)",
        "[ok](other.md#code-and-brackets-yes) [ok](#page) ![ok](img.png) [ok](other.md#kept)",
        "[ok](https://example.com/missing.md) [ok](mailto:a@b.c) `[code](nothing.md)`",
        "```",
        "[fenced](nothing.md)",
        "```",
        "[gone](missing.md) [bad anchor](other.md#same-name-2) [self](#nowhere)",
        "![gone](missing.png) [not markdown](img.png#x)",
        "[ref]: gone/too.md",
    ]) + "\n", encoding="utf-8")
    assert broken_links(page) == [
        "page.md:8: missing.md (no such file)",
        "page.md:8: other.md#same-name-2 (no heading #same-name-2 in other.md)",
        "page.md:8: #nowhere (no heading #nowhere in page.md)",
        "page.md:9: missing.png (no such file)",
        "page.md:9: img.png#x (an anchor into a file that is not markdown)",
        "page.md:10: gone/too.md (no such file)",
    ]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Why the Run key", "why-the-run-key"),
    ("Processes, consoles, signals", "processes-consoles-signals"),
    ("How fast (bench/viewer_latency.py)", "how-fast-benchviewer_latencypy"),
    ("One-shot `predict`, and comparing", "one-shot-predict-and-comparing"),
    ("Apple's package", "apples-package"),
    ("Memory on a 12 GB card", "memory-on-a-12-gb-card"),
    ("See [the viewer](viewer.md) → **now**", "see-the-viewer--now"),
])
def test_anchors_are_named_as_github_names_them(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
