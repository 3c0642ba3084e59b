"""The installed package must contain every subpackage and map kernels/ to p3dlab.kernels."""

import importlib
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "p3dlab").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
    assert "p3dlab.kernels" in listed


def test_kernels_import_as_p3dlab_kernels():
    mod = importlib.import_module("p3dlab.kernels.mesh_raster_math")
    assert Path(mod.__file__).resolve().parent == (ROOT / "kernels").resolve()


def _imports(path: Path) -> set:
    return set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", path.read_text(), flags=re.M))


def test_layering_nothing_imports_upward():
    """kernels -> ops -> structures/transforms/data/renderer -> widgets; kernels never import torch."""
    for path in (ROOT / "kernels").glob("*.py"):
        mods = _imports(path)
        assert not any(m == "torch" or m.startswith("torch.") for m in mods), f"{path.name} imports torch"
        assert not any(m.startswith(("p3dlab.ops", "p3dlab.renderer", "p3dlab.structures")) for m in mods), path.name
    for path in (ROOT / "p3dlab" / "ops").glob("*.py"):
        mods = _imports(path)
        assert not any(m.startswith(("p3dlab.renderer", "p3dlab.widgets")) for m in mods), f"ops/{path.name}"
    for sub in ("structures", "transforms", "data", "renderer"):
        for path in (ROOT / "p3dlab" / sub).glob("*.py"):
            assert not any(m.startswith("p3dlab.widgets") for m in _imports(path)), f"{sub}/{path.name}"
