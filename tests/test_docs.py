"""The design documents live in the repository (``docs/``), and the code points only at them.

* No source file, notebook or top-level document refers to documents outside the repository.
* Every ``docs/<file>.md#<anchor>`` reference in the code, and every link between the documents,
  lands on an existing file and on one of its headings (GitHub's anchor rules).
* Every kernel module is described in the docs.
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

# docs/<file>.md#<anchor> in code and notebooks
CODE_REF = re.compile(r"docs/([\w.-]+\.md)#([\w-]+)")
# [text](<file>.md), [text](<file>.md#<anchor>) and [text](#<anchor>) inside the documents
DOC_LINK = re.compile(r"\]\((?:([\w./-]+\.md)(?:#([\w-]+))?|#([\w-]+))\)")


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
