"""p3dlab's public API is deliberate: every package says what it offers in an explicit ``__all__``
of strings (never module objects), every listed name resolves, and the names are exactly those
that docs/public-api.md documents (``python docs/make_public_api.py`` rewrites the page)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_public_api", ROOT / "docs" / "make_public_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
PACKAGES = GEN.packages()
DOCUMENTED = GEN.documented_names()


def _init_file(package: str) -> Path:
    parts = package.split(".")
    base = ROOT / "kernels" if parts[:2] == ["p3dlab", "kernels"] else ROOT / "p3dlab"
    return base.joinpath(*parts[2 if base.name == "kernels" else 1 :], "__init__.py")


def test_every_package_is_found():
    """The discovery the checks below rely on sees the packages we know of."""
    assert {"p3dlab", "p3dlab.kernels", "p3dlab.ops", "p3dlab.renderer.mesh", "p3dlab.data"} <= set(PACKAGES)
    assert all(_init_file(p).is_file() for p in PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_a_literal_list_of_strings(package):
    """Written out, not computed (``[n for n in dir() ...]`` exports whatever happens to be imported)."""
    tree = ast.parse(_init_file(package).read_text(encoding="utf-8"))
    values = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            values.append(node.value)
    assert len(values) == 1, f"{package}: __all__ must be assigned once, at module level"
    node = values[0]
    assert isinstance(node, ast.List), f"{package}: __all__ must be a list literal"
    assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts), package


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve_and_are_not_modules(package):
    module = importlib.import_module(package)
    names = module.__all__
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert len(names) == len(set(names)), f"{package}: duplicates in __all__"
    modules = [n for n in names if inspect.ismodule(getattr(module, n))]  # getattr raises if a name is missing
    assert not modules, f"{package}.__all__ exports the modules {modules}"
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert not [k for k, v in namespace.items() if inspect.ismodule(v)], f"from {package} import * gives modules"


@pytest.mark.parametrize("name", PACKAGES + GEN.PUBLIC_MODULES)
def test_public_names_are_exactly_the_documented_ones(name):
    assert name in DOCUMENTED, f"{name} has no section in docs/public-api.md: run python docs/make_public_api.py"
    public, documented = set(GEN.public_names(name)), set(DOCUMENTED[name])
    assert public == documented, (
        f"{name}: public but undocumented {sorted(public - documented)}, documented but not public "
        f"{sorted(documented - public)}; change __all__ deliberately, then run python docs/make_public_api.py"
    )


def test_the_page_documents_nothing_else():
    assert set(DOCUMENTED) == set(PACKAGES + GEN.PUBLIC_MODULES)
    assert all(len(names) == len(set(names)) for names in DOCUMENTED.values())


def test_the_page_check_fails_on_an_undocumented_name(tmp_path):
    """The comparison can fail: a page missing one name and listing a stale one is reported."""
    text = GEN.PAGE.read_text(encoding="utf-8")
    page = tmp_path / "public-api.md"
    page.write_text(text.replace("- `cubify`:", "- `cubify_old`:"), encoding="utf-8")
    problems = GEN.differences(page)
    assert len(problems) == 1 and problems[0].startswith("p3dlab.ops: public but not on the page ['cubify']")
    assert "['cubify_old']" in problems[0]
