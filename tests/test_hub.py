"""A class on a real JupyterHub (``make hub``): deploy/jupyterhub/jupyterhub_config.py on loopback.

The hub runs the repository's configuration with the test's choices: the shared-password
authenticator, SimpleLocalProcessSpawner with a temporary home per student, configurable-http-proxy
from ``node_modules/`` (``make hub`` installs it), the lessons in fast mode. Five students log in;
an admin service token (added to the configuration here) starts their servers and gets a token for
each. Each student's server then runs one lesson concurrently, as JupyterLab would: a session on the
student's own copy of the lesson (the configuration's pre-spawn hook put it in their home), every
code cell executed over the kernel's websocket, the exercises answered with the solutions from
``course/source``. Every lesson must finish without an error; each student fetches an assignment
through nbgrader's exchange; and when the hub stops, no process it started may remain.

Measured and printed (docs/deployment.md, capacity table): each idle server's memory, each kernel's
peak memory and CPU time, the peak of each student's server and kernel together.

``P3DLAB_HUB_TEST_STUDENTS`` (default 5), ``P3DLAB_HUB_TEST_LESSON`` (default 01) and
``P3DLAB_HUB_TEST_FAST=0`` (the lesson at full size) and ``P3DLAB_HUB_TEST_THREADS`` (default 1) change
the run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.hub
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "jupyterhub" / "jupyterhub_config.py"
PROXY = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
N_STUDENTS = int(os.environ.get("P3DLAB_HUB_TEST_STUDENTS", "5"))
LESSON_PREFIX = os.environ.get("P3DLAB_HUB_TEST_LESSON", "01")
FAST = os.environ.get("P3DLAB_HUB_TEST_FAST", "1")  # 0: the lesson at full size (measurements)
THREADS = os.environ.get("P3DLAB_HUB_TEST_THREADS", "1")  # per kernel: five students on two cores
PASSWORD = "p3dlab-class-" + secrets.token_hex(4)
TEACHER_PASSWORD = "p3dlab-teacher-" + secrets.token_hex(16)
ADMIN_TOKEN = secrets.token_hex(32)
CELL_TIMEOUT = 600  # s, one cell: a lesson's longest at full size takes minutes
LESSON_TIMEOUT = 900  # s, a whole lesson
START_TIMEOUT = 180  # s, the hub, or all servers


def _missing() -> str | None:
    for module in ("jupyterhub", "jupyterhub_idle_culler", "psutil", "requests", "websocket", "nbformat"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (make hub: pip install -e '.[hub]')"
    if not (PROXY.exists() or shutil.which("configurable-http-proxy")):
        return "configurable-http-proxy is not installed (make hub: npm install into node_modules/)"
    if not shutil.which("node"):
        return "Node.js is missing: configurable-http-proxy needs it"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

import nbformat  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402
import websocket  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, condition, timeout: float, every: float = 0.5):
    """condition()'s first truthy value, polled until timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def _lesson_name() -> str:
    (nb,) = sorted((ROOT / "lessons").glob(f"{LESSON_PREFIX}_*.ipynb"))
    return nb.stem


class Hub:
    """A JupyterHub process on loopback, started from a configuration that loads the repository's."""

    def __init__(self, tmp: Path, students: list, teachers: list):
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.homes = tmp / "home"
        self.exchange = tmp / "exchange"
        self.log = tmp / "jupyterhub.log"
        (tmp / "students.txt").write_text("# the test's class\n" + "\n".join(students) + "\n")
        (tmp / "jupyterhub_config.py").write_text(
            f"""
c = get_config()
load_subconfig({str(CONFIG)!r})
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {_free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{_free_port()}"
c.ConfigurableHTTPProxy.command = [{str(PROXY if PROXY.exists() else shutil.which("configurable-http-proxy"))!r}]
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {ADMIN_TOKEN!r}}})
c.JupyterHub.load_roles.append(
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "list:services", "read:services"],
        "services": ["test-admin"],
    }}
)
"""
        )
        self.env = dict(
            os.environ,
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            P3DLAB_HUB_STUDENTS=str(tmp / "students.txt"),
            P3DLAB_HUB_TEACHERS=",".join(teachers),
            P3DLAB_HUB_AUTH="shared-password",
            P3DLAB_HUB_PASSWORD=PASSWORD,
            P3DLAB_HUB_ADMIN_PASSWORD=TEACHER_PASSWORD,
            P3DLAB_HUB_SPAWNER="simple",
            P3DLAB_HUB_STATE=str(tmp / "state"),
            P3DLAB_HUB_HOMES=str(self.homes),
            P3DLAB_EXCHANGE=str(self.exchange),
            P3DLAB_HUB_FAST=FAST,
            P3DLAB_HUB_THREADS=THREADS,
        )
        self.proc = None

    def start(self):
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.tmp / "jupyterhub_config.py")],
            cwd=self.tmp,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                return requests.get(f"{self.url}/hub/api/", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        _wait("the hub answering through the proxy", up, START_TIMEOUT)

    def api(self, method: str, path: str, **kw):
        kw.setdefault("timeout", 30)
        headers = {"Authorization": f"token {ADMIN_TOKEN}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, **kw)

    def processes(self) -> list:
        """The hub and every process under it (proxy, idle culler, servers, kernels)."""
        hub = psutil.Process(self.proc.pid)
        return [hub] + hub.children(recursive=True)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, as systemd stops it: the hub stops the servers and the proxy, then exits."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""


def _login(hub: Hub, name: str, password: str) -> int:
    """The login form, as a browser posts it; returns the status (302: logged in)."""
    session = requests.Session()
    page = session.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text).group(1)
    res = session.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": password, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )
    return res.status_code


class Kernel:
    """A session on a notebook of a student's server (as JupyterLab opens one), driven over its websocket."""

    def __init__(self, hub: Hub, user: str, token: str, path: str):
        self.base = f"{hub.url}/user/{user}/api"
        self.headers = {"Authorization": f"token {token}"}
        res = requests.post(
            f"{self.base}/sessions",
            json={"path": path, "type": "notebook", "name": Path(path).name, "kernel": {"name": "python3"}},
            headers=self.headers,
            timeout=120,
        )
        assert res.status_code == 201, f"{user}: no session ({res.status_code}): {res.text[:500]}"
        self.session_id = res.json()["id"]
        self.kernel_id = res.json()["kernel"]["id"]
        self.user = user
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{hub.port}/user/{user}/api/kernels/{self.kernel_id}/channels",
            header=[f"Authorization: token {token}"],
            timeout=CELL_TIMEOUT,
        )
        self.client_session = uuid.uuid4().hex

    def execute(self, code: str) -> tuple:
        """Run one cell: (error or None, stdout text); waits for the reply and the kernel's idle status."""
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user, "version": "5.3"}
        header["session"] = self.client_session
        content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False, "stop_on_error": True}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        self.ws.send(json.dumps(message))
        error, stdout, replied, idle = None, [], False, False
        deadline = time.monotonic() + CELL_TIMEOUT
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}: a cell ran over {CELL_TIMEOUT} s:\n{code[:300]}")
            frame = self.ws.recv()
            if isinstance(frame, bytes):  # a message with binary buffers (widgets): not ours to read
                continue
            reply = json.loads(frame)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = reply["msg_type"], reply["content"]
            if kind == "execute_reply":
                replied = True
                if body["status"] != "ok":
                    error = f"{body.get('ename')}: {body.get('evalue')}"
            elif kind == "status" and body["execution_state"] == "idle":
                idle = True
            elif kind == "stream" and body["name"] == "stdout":
                stdout.append(body["text"])
        return error, "".join(stdout)

    def close(self):
        self.ws.close()
        res = requests.delete(f"{self.base}/sessions/{self.session_id}", headers=self.headers, timeout=60)
        assert res.status_code == 204, f"{self.user}: session not deleted ({res.status_code})"


def _answered(student_copy: dict, lesson: str) -> list:
    """The code cells of the student's copy, each exercise answered with the source's solution."""
    source = nbformat.read(ROOT / "course" / "source" / lesson / f"{lesson}.ipynb", as_version=4)
    solutions = {}
    for cell in source.cells:
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution") and cell.cell_type == "code":
            solutions[grading["grade_id"]] = cell.source
    cells = []
    for cell in nbformat.from_dict(student_copy).cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cells.append(solutions.get(grade_id, cell.source))
    return cells


MEASURE = """
import json, os, resource, time
print("P3DLAB_MEASURE", json.dumps({"pid": os.getpid(), "server": os.getppid(), "cwd": os.getcwd(),
      "home": os.environ["HOME"], "fast": os.environ.get("P3DLAB_FAST"), "threads": os.environ.get("OMP_NUM_THREADS"),
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_s": time.process_time(),
      "end_rss_mb": int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20}))
"""

FETCH = """
import os, subprocess, sys
res = subprocess.run([sys.executable, "-m", "nbgrader", "fetch_assignment", "ps0"], capture_output=True, text=True,
                     cwd=os.environ["HOME"], timeout=120)
print("P3DLAB_FETCH", res.returncode, res.stdout[-300:], res.stderr[-300:])
"""


class Peaks(threading.Thread):
    """Samples the resident memory of each student's server and kernel together (psutil), keeps the
    peak, and remembers every process seen under the servers (the leftover check at the end)."""

    def __init__(self, servers: dict):
        super().__init__(daemon=True)
        self.servers = servers
        self.peak_mb = dict.fromkeys(servers, 0.0)
        self.seen = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.5):
            for user, pid in self.servers.items():
                try:
                    server = psutil.Process(pid)
                    tree = [server] + server.children(recursive=True)
                    self.seen.update((p.pid, p) for p in tree)
                    rss = sum(p.memory_info().rss for p in tree if p.is_running())
                except psutil.Error:
                    continue
                self.peak_mb[user] = max(self.peak_mb[user], rss / 2**20)


def _run_lesson(hub: Hub, user: str, token: str, lesson: str) -> tuple:
    """The student's copy of the lesson run in their server: (result, the kernel, still open)."""
    path = f"lessons/{lesson}.ipynb"
    headers = {"Authorization": f"token {token}"}
    res = requests.get(f"{hub.url}/user/{user}/api/contents/{path}", headers=headers, timeout=60)
    assert res.status_code == 200, f"{user}: no copy of {path} in the server ({res.status_code})"
    cells = _answered(res.json()["content"], lesson)
    start = time.monotonic()
    kernel = Kernel(hub, user, token, path)
    for i, code in enumerate(cells):
        error, _ = kernel.execute(code)
        if error:
            return {"user": user, "error": f"code cell {i}: {error}"}, kernel
    seconds = time.monotonic() - start
    _, out = kernel.execute(MEASURE)
    result = json.loads(out.split("P3DLAB_MEASURE", 1)[1])
    result.update(user=user, error=None, seconds=seconds, cells=len(cells))
    return result, kernel


def _fetch_and_close(result: dict, kernel: Kernel) -> None:
    """nbgrader's fetch_assignment from the student's kernel, then the session closed."""
    try:
        error, out = kernel.execute(FETCH)
        result["fetch"] = error or out
    finally:
        kernel.close()


def test_a_class_of_students_runs_a_lesson_on_the_hub(tmp_path):
    lesson = _lesson_name()
    students = [f"student{i + 1}" for i in range(N_STUDENTS)]
    hub = Hub(tmp_path, students, teachers=["teacher"])
    # a student who already worked on lesson 09: the hub must never overwrite it
    kept = hub.homes / students[0] / "lessons" / "09_animation_and_video.ipynb"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"my": "work"}')
    # a teacher's release in the exchange (nbgrader release_assignment puts it there)
    course_id = "p3dlab"
    released = hub.exchange / course_id / "outbound" / "ps0"
    released.mkdir(parents=True)
    shutil.copy(ROOT / "lessons" / f"{lesson}.ipynb", released / "ps0.ipynb")

    everything, peaks = [], None
    try:
        t0 = time.monotonic()
        hub.start()
        print(f"\nhub up in {time.monotonic() - t0:.1f} s: JupyterHub, configurable-http-proxy, idle culler")
        services = hub.api("GET", "/services").json()
        assert services["idle-culler"]["pid"], "the idle culler is not running as a hub service"

        # the class list made the users; the authenticator lets the class in, and nobody else
        listed = {u["name"] for u in hub.api("GET", "/users").json()}
        assert set(students) | {"teacher"} <= listed, f"users from the class list: {sorted(listed)}"
        for user in students:
            assert _login(hub, user, PASSWORD) == 302, f"{user} cannot log in"
        assert _login(hub, students[0], "wrong-password") == 403
        assert _login(hub, "mallory", PASSWORD) == 403, "a name not on the class list logged in"
        assert _login(hub, "teacher", TEACHER_PASSWORD) == 302, "the teacher cannot log in"
        assert _login(hub, "teacher", PASSWORD) == 403, "the students' password let a teacher (an admin) in"

        # every server at once, as at the start of a class
        t0 = time.monotonic()
        for user in students:
            res = hub.api("POST", f"/users/{user}/server")
            assert res.status_code in (201, 202), f"{user}: server not started ({res.status_code}) {res.text}"

        def all_ready():
            users = {u: hub.api("GET", f"/users/{u}").json() for u in students}
            if all(m["servers"].get("", {}).get("ready") for m in users.values()):
                return users
            return None

        models = _wait("5 servers ready", all_ready, START_TIMEOUT, every=1.0)
        print(f"{len(students)} servers ready in {time.monotonic() - t0:.1f} s")
        servers = {u: m["servers"][""]["state"]["pid"] for u, m in models.items()}
        idle = {u: psutil.Process(pid).memory_info().rss / 2**20 for u, pid in servers.items()}
        print("idle server RSS (MiB): " + ", ".join(f"{u} {mb:.0f}" for u, mb in idle.items()))
        others = [p for p in hub.processes() if p.pid not in servers.values() and p.ppid() not in servers.values()]
        print(
            "hub, proxy and culler RSS (MiB): "
            + ", ".join(f"{p.name()} {p.memory_info().rss / 2**20:.0f}" for p in others)
        )

        # each student's own copy of the lessons; a student's own file untouched
        n_lessons = len(list((ROOT / "lessons").glob("*.ipynb")))
        for user in students:
            copies = list((hub.homes / user / "lessons").glob("*.ipynb"))
            assert len(copies) == n_lessons, f"{user} has {len(copies)} of {n_lessons} lessons"
        assert kept.read_text() == '{"my": "work"}', "the hub overwrote a student's lesson"

        tokens = {}
        for user in students:
            res = hub.api("POST", f"/users/{user}/tokens", json={"note": "hub test", "expires_in": 3600})
            assert res.status_code == 201, f"{user}: no token ({res.status_code}) {res.text}"
            tokens[user] = res.json()["token"]

        peaks = Peaks(servers)
        peaks.start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(len(students)) as pool:
            futures = [pool.submit(_run_lesson, hub, u, tokens[u], lesson) for u in students]
            runs = [f.result(timeout=LESSON_TIMEOUT) for f in futures]
            wall = time.monotonic() - t0
            peaks.done.set()
            peaks.join(5)
            list(pool.map(lambda run: _fetch_and_close(*run), runs, timeout=START_TIMEOUT))
        results = [result for result, _ in runs]

        failed = [f"{r['user']}: {r['error']}" for r in results if r["error"]]
        assert not failed, f"{lesson} failed:\n" + "\n".join(failed) + "\n" + hub.tail()
        mode = "fast mode" if FAST == "1" else "full size"
        print(f"{lesson}, {mode}, {len(students)} students at once: {wall:.0f} s wall")
        print(
            "student   seconds  kernel peak RSS (MiB)  kernel RSS at the end (MiB)  kernel CPU (s)  server+kernel peak RSS (MiB)"
        )
        for r in results:
            user = r["user"]
            print(
                f"{user:9} {r['seconds']:7.0f}  {r['peak_rss_mb']:21.0f}  {r['end_rss_mb']:27.0f}  {r['cpu_s']:14.1f}  {peaks.peak_mb[user]:28.0f}"
            )
            assert r["fast"] == (FAST if FAST == "1" else None) and r["threads"] == THREADS, (
                "the configuration's environment did not reach the kernel"
            )
            assert Path(r["home"]) == hub.homes / user and Path(r["cwd"]) == hub.homes / user / "lessons"
            assert r["server"] == servers[user], "the kernel does not run under the student's own server"
            assert r["fetch"].startswith("P3DLAB_FETCH 0"), f"{user}: nbgrader fetch failed: {r['fetch']}"
            assert (hub.homes / user / "ps0" / "ps0.ipynb").exists(), f"{user}: the assignment was not fetched"

        # the end of the class: every server stopped through the API, then the hub
        for user in students:
            res = hub.api("DELETE", f"/users/{user}/server")
            assert res.status_code in (202, 204), f"{user}: server not stopped ({res.status_code})"
        _wait(
            "servers stopped",
            lambda: all(not hub.api("GET", f"/users/{u}").json()["servers"] for u in students),
            START_TIMEOUT,
            every=1.0,
        )
    finally:
        # every process the hub started: the hub, proxy, culler and servers, and the kernels seen under them
        if hub.proc is not None and hub.proc.poll() is None:
            everything += hub.processes()
        if peaks is not None:
            peaks.done.set()
            everything += list(peaks.seen.values())
        code = hub.stop()
        survivors = _wait_gone(everything, 30)
        for p in survivors:
            p.kill()
    assert code == 0, f"jupyterhub exited with {code}:\n{hub.tail()}"
    assert not survivors, "left running: " + ", ".join(f"{p.pid} {p.name()}" for p in survivors)


def _wait_gone(processes: list, timeout: float) -> list:
    """The processes still running after timeout seconds."""
    processes = list({p.pid: p for p in processes}.values())
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
