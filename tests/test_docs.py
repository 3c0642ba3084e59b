"""The design documents live in the repository (``docs/``), and the code points only at them.

* No source file, notebook or top-level document refers to documents outside the repository.
* Every ``docs/<file>.md#<anchor>`` reference in the code, and every link between the documents,
  lands on an existing file and on one of its headings (GitHub's anchor rules).
* Every kernel module is described in the docs.
* Every erratum the code, the lessons and the documents cite by number has its entry in docs/errata.md.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_DIRS = ("p3dlab", "kernels", "tests", "benchmarks")
NOTEBOOK_DIRS = ("course", "lessons")

# Built from pieces so that this file does not contain the strings it looks for.
SECTION = "\u00a7"
OUTSIDE_PATTERNS = (
    ".." + "/shared",
    "spec" + "/",
    "kernels.md " + SECTION,
    "conventions " + SECTION,
)
# The errata list is docs/errata.md; outside docs/, the bare file name can only mean another list.
ERRATA_FILE = "errata" + ".md"
BARE_ERRATA_FILE = re.compile(r"(?<!docs/)\b" + re.escape(ERRATA_FILE))

# docs/<file>.md#<anchor> in code and notebooks
CODE_REF = re.compile(r"docs/([\w.-]+\.md)#([\w-]+)")
# [text](<file>.md), [text](<file>.md#<anchor>) and [text](#<anchor>) inside the documents
DOC_LINK = re.compile(r"\]\((?:([\w./-]+\.md)(?:#([\w-]+))?|#([\w-]+))\)")

# Citations of the errata list: an E-number (or a list or range of them, "E<a>, E<b>d", "E<a>–E<b>") after
# the word errata/erratum or an opening parenthesis, and links to docs/errata.md with an #e<n> anchor.
_ERRATA_NUMBERS = r"E\d+[a-z]?(?:\s*(?:,|–|-|and)\s*E\d+[a-z]?)*"
ERRATA_CITATION = re.compile(rf"(?:\b[Ee]rrat(?:a|um)\b(?:\s+note|,\s+collected)?\s*\(?|\()({_ERRATA_NUMBERS})")
ERRATA_LINK = re.compile(r"docs/errata\.md#e(\d+)\b")
ERRATA_RANGE = re.compile(r"E(\d+)[a-z]?(?:\s*[–-]\s*E(\d+))?")


def _python_files():
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _notebooks():
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _notebook_text(path: Path) -> str:
    """The raw JSON and the decoded cell sources (escapes such as \\u00a7 decoded)."""
    raw = path.read_text(encoding="utf-8")
    cells = json.loads(raw).get("cells", [])
    sources = [c.get("source", "") for c in cells]
    sources = ["".join(src) if isinstance(src, list) else src for src in sources]
    return raw + "\n" + "\n".join(sources)


def _documents():
    return sorted(DOCS.glob("*.md")) + [p for p in (ROOT / "README.md", ROOT / "CONTRIBUTING.md") if p.is_file()]


def _texts():
    """(path relative to the root, text) of every file the rules apply to."""
    out = [(p, p.read_text(encoding="utf-8")) for p in _python_files() + _documents()]
    out += [(p, _notebook_text(p)) for p in _notebooks()]
    return [(p.relative_to(ROOT).as_posix(), text) for p, text in out]


def cited_errata(text: str) -> set:
    """The erratum numbers ``text`` cites; a range E<a>–E<b> cites every number from a to b."""
    numbers = {int(n) for n in ERRATA_LINK.findall(text)}
    for group in ERRATA_CITATION.findall(text):
        for first, last in ERRATA_RANGE.findall(group):
            numbers.update(range(int(first), int(last or first) + 1))
    return numbers


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """The anchors of every Markdown heading of ``path`` (outside fenced code), with GitHub's
    ``-1``, ``-2`` suffixes for repeated headings."""
    seen = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        base = github_anchor(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_anchor_rule_matches_github():
    assert github_anchor("OpenCV, OpenGL and NMR") == "opencv-opengl-and-nmr"
    assert github_anchor("Emission-absorption") == "emission-absorption"
    assert github_anchor("`kernels/` and `p3dlab/ops`") == "kernels-and-p3dlabops"
    assert github_anchor("  From Meshes to pixels ") == "from-meshes-to-pixels"


def test_the_checks_can_fail(tmp_path):
    """The patterns and the anchor collection catch what they are meant to catch."""
    sample = "see " + OUTSIDE_PATTERNS[2] + "8 and " + OUTSIDE_PATTERNS[0] + "/spec"
    assert [p for p in OUTSIDE_PATTERNS if p in sample] == [OUTSIDE_PATTERNS[0], OUTSIDE_PATTERNS[2]]
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n## Part\n\n```\n# not a heading\n```\n\n## Part\n", encoding="utf-8")
    assert anchors(doc) == {"title", "part", "part-1"}
    ref = "docs/" + "kernels.md#volume-sampler"
    assert CODE_REF.findall("(" + ref + ")") == [("kernels.md", "volume-sampler")]
    links = "[a](kernels.md#volume-sampler), [b](#part) and [c](../README.md)"
    assert DOC_LINK.findall(links) == [("kernels.md", "volume-sampler", ""), ("", "", "part"), ("../README.md", "", "")]


def test_nothing_refers_to_documents_outside_the_repository():
    offending = [
        f"{path}:{text[: text.find(pattern)].count(chr(10)) + 1}: {pattern!r}"
        for path, text in _texts()
        for pattern in OUTSIDE_PATTERNS
        if pattern in text
    ]
    offending += [
        f"{path}:{text[: match.start()].count(chr(10)) + 1}: {ERRATA_FILE!r} (write docs/{ERRATA_FILE})"
        for path, text in _texts()
        if not path.startswith("docs/")
        for match in BARE_ERRATA_FILE.finditer(text)
    ]
    assert not offending, "references to documents outside the repository:\n" + "\n".join(offending)


def test_code_references_to_the_docs_land_on_headings():
    refs = [(path, f, a) for path, text in _texts() if not path.endswith(".md") for f, a in CODE_REF.findall(text)]
    assert refs, "no code refers to docs/<file>.md#<anchor>: the pattern is broken"
    missing = []
    for path, name, anchor in refs:
        doc = DOCS / name
        if not doc.is_file():
            missing.append(f"{path}: docs/{name} does not exist")
        elif anchor not in anchors(doc):
            missing.append(f"{path}: docs/{name} has no heading with anchor #{anchor}")
    assert not missing, "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.name)
def test_links_between_documents_land_on_headings(doc):
    missing = []
    for target, anchor, own_anchor in DOC_LINK.findall(doc.read_text(encoding="utf-8")):
        path = (doc.parent / target).resolve() if target else doc
        anchor = anchor or own_anchor
        if not path.is_file():
            missing.append(f"{target} does not exist")
        elif anchor and anchor not in anchors(path):
            missing.append(f"{target or doc.name} has no heading with anchor #{anchor}")
    assert not missing, f"{doc.name}: " + "; ".join(missing)


def test_every_kernel_module_is_documented():
    text = (DOCS / "kernels.md").read_text(encoding="utf-8") + (DOCS / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(p.name for p in (ROOT / "kernels").glob("*.py") if p.name != "__init__.py")
    assert modules, "no kernel modules found"
    undocumented = [m for m in modules if m not in text]
    assert not undocumented, f"kernel modules missing from docs/kernels.md and docs/architecture.md: {undocumented}"


def test_the_errata_checks_can_fail():
    """The citation pattern finds every form used, expands ranges and skips E-codes that cite nothing; the
    outside-file pattern accepts docs/errata.md only. (Built from pieces: this file cites no erratum.)"""
    e = "E"
    sample = (
        f"(errata {e}79), erratum {e}49; Errata ({e}14, {e}28d) and Errata, collected ({e}1, {e}2); "
        f"errata {e}12–{e}15; one optimiser throughout, ({e}56); docs/{ERRATA_FILE}#e21; "
        f"Errata call-outs; noqa: {e}402; {e}7 = 1.0"
    )
    assert cited_errata(sample) == {1, 2, 12, 13, 14, 15, 21, 28, 49, 56, 79}
    assert [m.start() for m in BARE_ERRATA_FILE.finditer(f"docs/{ERRATA_FILE} and ../x/{ERRATA_FILE}")] == [24]


def test_every_cited_erratum_has_an_entry():
    """Every erratum number cited anywhere (code, lessons, documents) has a ``### E<n>`` heading in
    docs/errata.md, and every entry is numbered once."""
    doc = DOCS / ERRATA_FILE
    assert doc.is_file(), f"docs/{ERRATA_FILE} is missing"
    headings = re.findall(r"^### E(\d+)\s*$", doc.read_text(encoding="utf-8"), flags=re.M)
    entries = {int(n) for n in headings}
    assert len(headings) == len(entries), f"docs/{ERRATA_FILE} numbers an entry twice"
    assert {f"e{n}" for n in entries} <= anchors(doc)
    cited = {}
    for path, text in _texts():
        if path != f"docs/{ERRATA_FILE}":
            for n in cited_errata(text):
                cited.setdefault(n, set()).add(path)
    assert len(cited) > 20, "hardly any errata citations found: the pattern is broken"
    missing = [f"E{n}: cited in {', '.join(sorted(cited[n]))}" for n in sorted(set(cited) - entries)]
    assert not missing, f"errata cited without an entry in docs/{ERRATA_FILE}:\n" + "\n".join(missing)
