"""Write docs/public-api.md: p3dlab's public names, package by package, one line each.

A package's public names are its ``__all__``; a public module without ``__all__`` (``p3dlab.config``,
``p3dlab.errors``, ``p3dlab.video``) offers the functions and classes it defines. tests/test_public_api.py
checks that the page lists exactly those names, so adding or removing a public name is a deliberate
act: change ``__all__``, run this script, review the page's diff, commit both.

    python docs/make_public_api.py           # rewrite the page
    python docs/make_public_api.py --check   # exit 1 if the page's names differ from the package's

The page's descriptions start as the first sentence of each object's docstring; edit them by hand
as you like: a rewrite keeps every description already on the page and only fills in new names.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "public-api.md"

# Modules that are public themselves (lessons import from them), besides every package.
PUBLIC_MODULES = ["p3dlab.config", "p3dlab.errors", "p3dlab.ops.pixels", "p3dlab.video"]
# Packages with no public names: reached through the layers above them.
INTERNAL = {
    "p3dlab.kernels": "Numba kernels on NumPy arrays, internal: the rest of p3dlab reaches them through `p3dlab.ops`."
}

# Descriptions for names whose docstring does not give one (named tuples, type aliases, no docstring).
DESCRIPTIONS = {
    "Device": 'The type of a device argument: a string such as ``"cpu"`` or a ``torch.device``.',
    "Faces": "``load_obj``'s faces: ``verts_idx``, ``normals_idx``, ``textures_idx`` (F, 3), ``materials_idx`` (F,).",
    "KNN": "``knn_points``' result: ``dists``, ``idx`` (N, P1, K) and ``knn`` (N, P1, K, D) when asked for.",
    "NormWeightedCompositor": "Point compositor: ``norm_weighted_sum`` of the point features.",
    "PointFragments": "The point rasterizer's output: ``idx``, ``zbuf`` and ``dists`` (N, H, W, K).",
    "PointsRasterizer": "World-space ``Pointclouds`` -> ``PointFragments`` through ``cameras``.",
    "Properties": "``load_obj``'s normals, UVs, material colours, texture images and texture atlas.",
    "WeightedSumCompositor": "Point compositor: ``weighted_sum`` of the point features.",
    "main": "The command line ``python -m p3dlab.classroom`` (release, validate, summary, book, warmup).",
    "march_volumes_mse": "``march_volumes`` in quadrature mode fused with the multi-view fitting loss (MSE of colour "
    "and opacity): ``(loss, features, opacity)``.",
    "norm_weighted_sum": "``sum_k alpha_k f_k / sum_k alpha_k`` over valid slots (N, C, H, W).",
    "weighted_sum": "``sum_k alpha_k f_k`` over valid slots (N, C, H, W).",
}

HEADER = """# Public API

Everything a lesson, a test or a user may import from p3dlab, package by package. A package's public
names are its `__all__` (what `from package import *` gives); nothing else in it is promised to stay.
Many names are PyTorch3D's and sit where PyTorch3D has them (see pytorch3d-compatibility.md); a name
shown "from" another module is that module's object, re-exported. `tests/test_public_api.py` checks
that this page lists exactly the public names; `python docs/make_public_api.py` rewrites it after a
change to an `__all__`.
"""

_SECTION = re.compile(r"^## `([\w.]+)`\s*$")
_ITEM = re.compile(r"^- `([\w]+)`(?:: (.*))?$")


def packages() -> List[str]:
    """Every package of p3dlab, by its import name (kernels/ is ``p3dlab.kernels``), sorted."""
    found = {"p3dlab.kernels"}
    for init in (ROOT / "p3dlab").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return sorted(found)


def public_names(name: str) -> List[str]:
    """A package's ``__all__``; for a module without one, the classes and functions it defines."""
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        n
        for n, obj in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name
    )


def documented_names(page: Path = PAGE) -> Dict[str, List[str]]:
    """The page's sections: package or module -> the names listed under it, in page order."""
    sections: Dict[str, List[str]] = {}
    current = None
    for line in page.read_text(encoding="utf-8").splitlines():
        if m := _SECTION.match(line):
            current = sections.setdefault(m.group(1), [])
        elif (m := _ITEM.match(line)) and current is not None:
            current.append(m.group(1))
    return sections


def _descriptions(page: Path) -> Dict[Tuple[str, str], str]:
    if not page.exists():
        return {}
    out, current = {}, None
    for line in page.read_text(encoding="utf-8").splitlines():
        if m := _SECTION.match(line):
            current = m.group(1)
        elif (m := _ITEM.match(line)) and current is not None and m.group(2):
            out[(current, m.group(1))] = m.group(2)
    return out


def first_sentence(doc: str) -> str:
    """The docstring's first sentence on one line (up to the first '. ', ': ' list or blank line)."""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    para = re.sub(r"\s*\([^()]*§[^()]*\)", "", para)  # no pointers to documents outside the repository
    m = re.search(r"(?<=[a-z0-9)`'\"])\.(\s|$)", para)
    return (para[: m.start() + 1] if m else para).strip()


def describe(package: str, name: str) -> str:
    if name == "__version__":
        return "the package's version string."
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    obj = getattr(importlib.import_module(package), name)
    own = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)  # not a base's
    text = first_sentence(inspect.cleandoc(own) if isinstance(own, str) else "") or "(undocumented)"
    home = getattr(obj, "__module__", None)
    if home and home != package and not home.startswith(package + "."):
        text += f" From `{home}`."
    return text


def render(old: Dict[Tuple[str, str], str]) -> str:
    lines = [HEADER]
    for name in packages() + PUBLIC_MODULES:
        module = importlib.import_module(name)
        lines.append(f"## `{name}`\n")
        summary = INTERNAL.get(name) or first_sentence(module.__doc__ or "")
        if summary:
            lines.append(f"{summary}\n")
        items = [f"- `{n}`: {old.get((name, n)) or describe(name, n)}" for n in public_names(name)]
        lines.append("\n".join(items) + "\n" if items else "No public names.\n")
    return "\n".join(lines)


def differences(page: Path = PAGE) -> List[str]:
    """Where the page and the package disagree: one line per package or module."""
    documented = documented_names(page)
    problems = []
    for name in packages() + PUBLIC_MODULES:
        have, listed = set(public_names(name)), set(documented.pop(name, []))
        if have != listed:
            problems.append(
                f"{name}: public but not on the page {sorted(have - listed)}, on the page but not public "
                f"{sorted(listed - have)}"
            )
    problems += [f"{name}: on the page but not a package of p3dlab" for name in documented]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page's names are out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        print("\n".join(problems) or "docs/public-api.md lists exactly the public names")
        return 1 if problems else 0
    PAGE.write_text(render(_descriptions(PAGE)), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
