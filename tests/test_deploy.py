"""The deployment files agree with the capacity table (docs/deployment.md) and do what they say.

deploy/z2jh/values.yaml parses, and its per-student requests, limits and culling times are the
table's; deploy/jupyterhub/jupyterhub_config.py loads (without JupyterHub: it is a traitlets config
file) with the same limits and culling times, and both ways of copying the lessons in (the hub's
pre-spawn hook, the Kubernetes postStart command) copy every lesson and never overwrite a
student's file. The hub itself runs in tests/test_hub.py (``make hub``).
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config.loader import PyFileConfigLoader

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "z2jh" / "values.yaml"
HUB_CONFIG = ROOT / "deploy" / "jupyterhub" / "jupyterhub_config.py"
CAPACITY = ROOT / "docs" / "deployment.md"
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb"))


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _table_row(key: str) -> list:
    """The cells of the capacity table's row whose last cell names ``key`` (in backticks)."""
    rows = [line for line in CAPACITY.read_text().splitlines() if line.startswith("|") and f"`{key}`" in line]
    assert len(rows) == 1, f"docs/deployment.md: {len(rows)} table rows name `{key}`"
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def _number(cell: str) -> float:
    return float(re.match(r"[\d.]+", cell).group())


def _hub_config(tmp_path, monkeypatch, spawner="systemd"):
    students = tmp_path / "students.txt"
    students.write_text("# a class\nada\ngrace, alan\n\n")
    monkeypatch.setenv("P3DLAB_HUB_STUDENTS", str(students))
    monkeypatch.setenv("P3DLAB_HUB_TEACHERS", "teacher")
    monkeypatch.setenv("P3DLAB_HUB_SPAWNER", spawner)
    monkeypatch.setenv("P3DLAB_HUB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("P3DLAB_EXCHANGE", str(tmp_path / "exchange"))
    for name in ("P3DLAB_HUB_MEM_LIMIT", "P3DLAB_HUB_CPU_LIMIT", "P3DLAB_HUB_KERNEL_IDLE", "P3DLAB_HUB_SERVER_IDLE"):
        monkeypatch.delenv(name, raising=False)
    return PyFileConfigLoader(HUB_CONFIG.name, str(HUB_CONFIG.parent)).load_config()


def test_values_resources_are_the_capacity_tables():
    single = _values()["singleuser"]
    for key in ("memory", "cpu"):
        _, guarantee, limit, _ = _table_row(f"singleuser.{key}")[:4]
        assert str(single[key]["guarantee"]) == guarantee, f"singleuser.{key}.guarantee"
        assert str(single[key]["limit"]) == limit, f"singleuser.{key}.limit"
    assert single["memory"]["guarantee"] != single["memory"]["limit"]


def test_values_culling_is_the_capacity_tables():
    values = _values()
    culling = values["singleuser"]["extraFiles"]["kernel-culling"]
    assert culling["mountPath"].endswith(".json"), "z2jh renders data by the file's extension"
    kernel = culling["data"]["MappingKernelManager"]
    assert kernel["cull_idle_timeout"] == _number(_table_row("MappingKernelManager.cull_idle_timeout")[1])
    assert values["cull"]["enabled"] and values["cull"]["timeout"] == _number(_table_row("cull.timeout")[1])


def test_one_machine_config_has_the_same_limits_and_culling(tmp_path, monkeypatch):
    c = _hub_config(tmp_path, monkeypatch)
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"
    assert c.SystemdSpawner.mem_limit == _table_row("singleuser.memory")[2]
    assert c.SystemdSpawner.cpu_limit == _number(_table_row("singleuser.cpu")[2])
    kernel_idle = _number(_table_row("MappingKernelManager.cull_idle_timeout")[1])
    assert f"--MappingKernelManager.cull_idle_timeout={kernel_idle:.0f}" in c.Spawner.args
    (culler,) = [s for s in c.JupyterHub.services if s["name"] == "idle-culler"]
    assert f"--timeout={_number(_table_row('cull.timeout')[1]):.0f}" in culler["command"]
    # the class list, the course id of course/nbgrader_config.py, the exchange made for the students
    assert set(c.Authenticator.allowed_users) == {"ada", "grace", "alan", "teacher"}
    assert set(c.Authenticator.admin_users) == {"teacher"}
    assert c.Spawner.environment["P3DLAB_COURSE_ID"] == "p3dlab"
    assert (tmp_path / "exchange").is_dir() and (tmp_path / "exchange").stat().st_mode & 0o1777 == 0o1777


def test_hub_hook_copies_the_lessons_and_keeps_a_students_work(tmp_path, monkeypatch):
    c = _hub_config(tmp_path, monkeypatch, spawner="simple")
    home = tmp_path / "home" / "ada"
    mine = home / "lessons" / LESSONS[0]
    mine.parent.mkdir(parents=True)
    mine.write_text("my work")
    spawner = SimpleNamespace(home_dir=str(home), user=SimpleNamespace(name="ada"), log=logging.getLogger("test"))
    c.Spawner.pre_spawn_hook(spawner)
    assert sorted(p.name for p in (home / "lessons").iterdir()) == LESSONS
    assert mine.read_text() == "my work"
    c.Spawner.pre_spawn_hook(spawner)  # the next start: nothing changes
    assert mine.read_text() == "my work"


def test_kubernetes_post_start_copies_the_lessons_and_keeps_a_students_work(tmp_path):
    command = _values()["singleuser"]["lifecycleHooks"]["postStart"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and "/srv/p3dlab/lessons" in command[2]
    script = command[2].replace("/srv/p3dlab", str(ROOT))  # the image's copy of the repository is this one
    mine = tmp_path / "lessons" / LESSONS[-1]
    mine.parent.mkdir()
    mine.write_text("my work")
    for _ in range(2):
        subprocess.run(["sh", "-c", script], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True)
    assert sorted(p.name for p in (tmp_path / "lessons").iterdir()) == LESSONS
    assert mine.read_text() == "my work"
