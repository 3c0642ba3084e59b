"""The installed package must contain every subpackage and map kernels/ to p3dlab.kernels."""

import importlib
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
