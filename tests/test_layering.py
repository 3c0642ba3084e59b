"""The package's layers, checked: every import inside p3dlab points down, and no two subpackages
import each other.

Every module under p3dlab/ and kernels/ (installed as ``p3dlab.kernels``) is parsed with ``ast``, and
every import is collected: at module level and inside functions, absolute and relative, plus
``importlib.import_module("...")`` with a literal name. Each module belongs to a subpackage (the
name after ``p3dlab.``; ``p3dlab/video.py`` is the subpackage ``video``), and each subpackage has a
layer in ``LAYERS``. A module may import its own subpackage and any subpackage on a lower layer,
never one on its own layer or above: siblings on one layer stay independent, so each can be read,
tested and replaced without the others.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Subpackage -> layer, bottom to top. The order is the developer guide's: kernels -> ops ->
# structures/transforms -> renderer/loss -> data/volumes/nerf/... -> widgets/classroom -> lessons.
# Decisions this table records:
# - errors and config are leaves that import nothing of p3dlab, so everything (kernels included)
#   may use them.
# - the top-level ``p3dlab`` namespace (version, base error) applies the process's thread policy at
#   import (p3dlab.runtime.threads), so it sits above runtime; nothing in the package imports it.
# - common (device helpers, the fit history shared by volumes and nerf) is torch code below ops.
# - io reads files into structures; it sits with the renderer and losses, below the data sets.
# - data sits above the renderer: data.multiview renders its multi-view training sets with it.
#   (The README's one-line layering, "structures/transforms/data -> renderer", predates that.)
# - the Part 3 models (body, meshrcnn, giraffe, synsin) and Gaussian splatting's training sit with the
#   widgets: they build on the data sets, volumes and NeRF fields below them and are independent of
#   each other; lessons combine them with the widgets.
# - utils and vis are PyTorch3D-named facades over what is below them: utils re-exports data's
#   icosphere and the renderer's camera conversions; vis draws with the widgets, so it sits on top.
LAYERS: Dict[str, int] = {
    "errors": 0,
    "config": 0,
    "kernels": 1,
    "common": 2,
    "runtime": 2,  # memory pools, huge pages, memory limits, the volume kernels' scratch policy, threads
    "p3dlab": 3,  # the top-level namespace, p3dlab/__init__.py
    "ops": 3,
    "structures": 4,
    "transforms": 4,
    "renderer": 5,
    "loss": 5,
    "io": 5,
    "data": 6,
    "volumes": 6,
    "nerf": 6,
    "video": 6,
    "widgets": 7,
    "classroom": 7,
    "utils": 7,
    # the book's Part 3 and Gaussian splatting: models built on the data sets, fields and renderers
    "body": 7,  # a procedural SMPL-like body model and SMPLify (chapter 8)
    "meshrcnn": 7,  # Mesh R-CNN's voxel and mesh-refinement heads on procedural shapes (chapter 10)
    "giraffe": 7,  # compositional neural feature fields (chapter 7)
    "synsin": 7,  # single-image view synthesis by point splatting (chapter 9)
    "splatting": 7,  # 3D Gaussian splatting: training, densification
    "vis": 8,
}

# The kernels are NumPy/Numba code: no torch, and of p3dlab only other kernels and the errors.
KERNELS_MAY_IMPORT = {"kernels", "errors"}
# ... and the rest of the package reaches them through ops, which wraps them for torch (an op may
# be as thin as p3dlab.ops.text_parse, the OBJ reader's entry to the text-parsing kernel).
KERNELS_IMPORTED_BY = {"kernels", "ops"}

# The only imports allowed to point upward, each with its reason: (importing module, imported module).
# ``p3dlab.ops`` answers to PyTorch3D's ``pytorch3d.ops.cubify`` and ``pytorch3d.ops.SubdivideMeshes``,
# which build ``Meshes`` and so are defined in p3dlab.structures. The ops package resolves the two
# names on first use, inside its module ``__getattr__``; importing p3dlab.ops never imports the
# structures. Such an alias must stay inside a function: at module level it would be a real cycle.
ALLOWED_UPWARD: Dict[Tuple[str, str], str] = {
    ("p3dlab.ops", "p3dlab.structures.cubify"): "PyTorch3D name p3dlab.ops.cubify, resolved lazily",
    ("p3dlab.ops", "p3dlab.structures.subdivide"): "PyTorch3D name p3dlab.ops.SubdivideMeshes, resolved lazily",
}


class Import(NamedTuple):
    module: str  # the importing module, e.g. "p3dlab.ops.mesh_ops"
    path: str  # its file, relative to the repository
    line: int
    target: str  # the imported module, e.g. "p3dlab.structures"
    names: str  # what the statement imports from it, for the message
    in_function: bool


def module_files(root: Path) -> Dict[str, Path]:
    """Module name -> file of every module of p3dlab/ and kernels/ under ``root``."""
    found = {}
    for base, prefix in ((root / "p3dlab", ("p3dlab",)), (root / "kernels", ("p3dlab", "kernels"))):
        for path in sorted(base.rglob("*.py")):
            parts = prefix + path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def subpackage(module: str) -> str:
    """``p3dlab.ops.knn`` -> ``ops``; ``p3dlab.video`` -> ``video``; ``p3dlab`` -> ``p3dlab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _literal_import_module(node: ast.Call) -> Optional[str]:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def imports_of(module: str, path: Path, modules: Set[str], root: Path) -> List[Import]:
    """Every import of ``module`` that names a p3dlab module, wherever it stands in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: List[Import] = []

    def add(node, target: str, names: str, in_function: bool):
        if target == "p3dlab" or target.startswith("p3dlab."):
            found.append(Import(module, str(path.relative_to(root)), node.lineno, target, names, in_function))

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(child, alias.name, alias.name, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: one level is the current package, each more one up
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module
                for alias in child.names:
                    # ``from p3dlab import data`` imports the subpackage p3dlab.data
                    submodule = f"{source}.{alias.name}"
                    add(child, submodule if submodule in modules else source, alias.name, in_function)
            elif isinstance(child, ast.Call) and (name := _literal_import_module(child)):
                add(child, name, name, in_function)
            visit(child, inner)

    visit(tree, False)
    return found


def all_imports(root: Path = ROOT) -> List[Import]:
    files = module_files(root)
    return [imp for module, path in files.items() for imp in imports_of(module, path, set(files), root)]


def _describe(imp: Import) -> str:
    return f"{imp.path}:{imp.line} ({imp.module}) imports {imp.names} from {imp.target}"


def layer_violations(imports: List[Import]) -> List[str]:
    """One message per import that points to the importer's own layer or above (not allowed)."""
    problems = []
    for imp in imports:
        src, dst = subpackage(imp.module), subpackage(imp.target)
        if src == dst:
            continue
        for pkg in (src, dst):
            if pkg not in LAYERS:
                problems.append(f"{_describe(imp)}: subpackage {pkg!r} has no layer; add it to LAYERS")
        if src not in LAYERS or dst not in LAYERS:
            continue
        if src == "kernels" and dst not in KERNELS_MAY_IMPORT:
            problems.append(f"{_describe(imp)}: kernels may import only other kernels and p3dlab.errors")
        elif dst == "kernels" and src not in KERNELS_IMPORTED_BY:
            problems.append(f"{_describe(imp)}: {src} must reach the kernels through p3dlab.ops")
        elif LAYERS[dst] >= LAYERS[src] and (imp.module, imp.target) not in ALLOWED_UPWARD:
            problems.append(
                f"{_describe(imp)}: {src} (layer {LAYERS[src]}) may import only lower layers, "
                f"and {dst} is on layer {LAYERS[dst]}"
            )
    return problems


def package_cycles(imports: List[Import]) -> List[str]:
    """Import cycles between subpackages, each as ``a -> b -> ... -> a`` with one import per step."""
    edges: Dict[str, Dict[str, Import]] = defaultdict(dict)
    for imp in imports:
        src, dst = subpackage(imp.module), subpackage(imp.target)
        if src != dst and (imp.module, imp.target) not in ALLOWED_UPWARD:
            edges[src].setdefault(dst, imp)
    cycles, state = [], {}  # state: 1 while on the DFS stack, 2 when done

    def dfs(node: str, stack: List[str]):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                loop = stack[stack.index(nxt) :] + [node, nxt] if nxt in stack else [node, nxt]
                steps = "; ".join(_describe(edges[a][b]) for a, b in zip(loop, loop[1:]))
                cycles.append(f"{' -> '.join(loop)}: {steps}")
            elif nxt not in state:
                dfs(nxt, stack + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node, [])
    return cycles


# ----------------------------------------------------------------------------- the package itself
IMPORTS = all_imports()


def test_every_subpackage_has_a_layer():
    missing = sorted({subpackage(m) for m in module_files(ROOT)} - set(LAYERS))
    assert not missing, f"place {missing} in LAYERS (tests/test_layering.py)"


def test_nothing_imports_upward():
    problems = layer_violations(IMPORTS)
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_no_import_cycle_between_subpackages():
    cycles = package_cycles(IMPORTS)
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(cycles)


def test_kernels_do_not_import_torch():
    problems = []
    for module, path in module_files(ROOT).items():
        if subpackage(module) != "kernels":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            problems += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "torch"
            ]
    assert not problems, "kernels take NumPy arrays, never torch:\n" + "\n".join(problems)


def test_allowed_upward_imports_are_lazy_and_still_needed():
    """Each allowance is used, and only inside a function: at module level it would be a cycle."""
    used = {(imp.module, imp.target): imp for imp in IMPORTS if (imp.module, imp.target) in ALLOWED_UPWARD}
    assert set(used) == set(ALLOWED_UPWARD), f"drop unused allowances {sorted(set(ALLOWED_UPWARD) - set(used))}"
    eager = [_describe(imp) for imp in used.values() if not imp.in_function]
    assert not eager, "an allowed upward import must stay inside a function:\n" + "\n".join(eager)


def test_importing_ops_does_not_import_structures():
    """The aliases are lazy in fact, not only on paper (a fresh interpreter, so nothing is cached)."""
    import subprocess
    import sys

    code = "import sys, p3dlab.ops; print('p3dlab.structures' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- the checker itself
def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def tree(tmp_path):
    """A three-package miniature: kernels, ops and renderer, importing downward only."""
    _write(tmp_path, "p3dlab/__init__.py")
    _write(tmp_path, "kernels/__init__.py")
    _write(tmp_path, "kernels/k.py", "import numpy\n")
    _write(tmp_path, "p3dlab/ops/__init__.py", "from .a import f\n")
    _write(tmp_path, "p3dlab/ops/a.py", "from p3dlab.kernels import k\n\ndef f():\n    return k\n")
    _write(tmp_path, "p3dlab/renderer/__init__.py", "from p3dlab.ops import f\n")
    return tmp_path


def test_checker_accepts_a_downward_tree(tree):
    imports = all_imports(tree)
    assert {(i.module, i.target) for i in imports} == {
        ("p3dlab.ops", "p3dlab.ops.a"),
        ("p3dlab.ops.a", "p3dlab.kernels.k"),
        ("p3dlab.renderer", "p3dlab.ops"),
    }
    assert layer_violations(imports) == [] and package_cycles(imports) == []


@pytest.mark.parametrize(
    "statement, target",
    [
        ("from p3dlab.renderer import something", "p3dlab.renderer"),
        ("from p3dlab import renderer", "p3dlab.renderer"),
        ("from ...renderer import something", "p3dlab.renderer"),  # relative, from p3dlab/ops/sub/b.py
        ("__import__('p3dlab.renderer')", "p3dlab.renderer"),
    ],
)
def test_checker_reports_an_upward_import_inside_a_function(tree, statement, target):
    _write(tree, "p3dlab/ops/sub/__init__.py")
    _write(tree, "p3dlab/ops/sub/b.py", f"def g():\n    {statement}\n")
    problems = layer_violations(all_imports(tree))
    assert len(problems) == 1
    assert problems[0].startswith("p3dlab/ops/sub/b.py:2 (p3dlab.ops.sub.b) imports ")
    assert f"from {target}:" in problems[0]
    assert problems[0].endswith("ops (layer 3) may import only lower layers, and renderer is on layer 5")
    cycles = package_cycles(all_imports(tree))
    assert len(cycles) == 1 and cycles[0].startswith("ops -> renderer -> ops: ")


def test_checker_reports_siblings_kernels_and_unplaced_packages(tree):
    """A sibling on the same layer, a kernel importing ops, a package the table lacks, a kernel used
    directly by the renderer: four messages."""
    _write(tree, "p3dlab/loss/__init__.py", "from p3dlab.renderer import f\n")
    _write(tree, "kernels/bad.py", "from p3dlab.ops import f\n")
    _write(tree, "p3dlab/newpkg/__init__.py", "from p3dlab.ops import f\n")
    _write(tree, "p3dlab/renderer/direct.py", "from p3dlab.kernels.k import numpy\n")
    problems = layer_violations(all_imports(tree))
    assert len(problems) == 4
    assert any("p3dlab/renderer/direct.py:1" in p and "through p3dlab.ops" in p for p in problems)
    assert any(
        "p3dlab/loss/__init__.py:1" in p
        and "loss (layer 5) may import only lower layers, and renderer is on layer 5" in p
        for p in problems
    )
    assert any("kernels/bad.py:1" in p and "kernels may import only" in p for p in problems)
    assert any("'newpkg' has no layer" in p for p in problems)
