# JupyterHub for a p3dlab class on one machine (deploy/README.md). Start it from the repository's
# virtual environment:
#
#     jupyterhub -f deploy/jupyterhub/jupyterhub_config.py
#
# Everything a teacher changes is an environment variable (defaults in brackets):
#
#   P3DLAB_HUB_STUDENTS   the class list: a file with one user name per line, "#" starts a comment
#                         [deploy/jupyterhub/students.txt]
#   P3DLAB_HUB_TEACHERS   teachers' user names, comma separated: hub admins, allowed to log in too []
#   P3DLAB_HUB_AUTH       how people log in: "pam" (Unix accounts) | "shared-password" (one password for
#                         every student: a workshop) | "dummy" (any password: tests only) | the import
#                         path of another authenticator class, e.g. "oauthenticator.github.GitHubOAuthenticator" [pam]
#   P3DLAB_HUB_PASSWORD   the students' password with "shared-password" (8 characters or more)
#   P3DLAB_HUB_ADMIN_PASSWORD  the teachers' password with "shared-password" (32 characters or more)
#   P3DLAB_HUB_SPAWNER    how servers start: "localprocess" (each student a Unix user) | "systemd" (the same,
#                         plus memory and CPU limits: pip install jupyterhub-systemdspawner) | "simple" (all
#                         students as the hub's own Unix user, homes under P3DLAB_HUB_HOMES: no isolation,
#                         tests and trusted workshops only) [localprocess]
#   P3DLAB_HUB_HOMES      with "simple": where the students' home folders are made [<P3DLAB_HUB_STATE>/home]
#   P3DLAB_HUB_STATE      the hub's database, cookie secret and pid file [/srv/jupyterhub]
#   P3DLAB_HUB_URL        the address the hub listens on [http://:8000]
#   P3DLAB_EXCHANGE       nbgrader's exchange folder, shared by teachers and students [/srv/nbgrader/exchange]
#   P3DLAB_HUB_MEM_LIMIT  with "systemd": memory limit per student [2G] (docs/deployment.md, capacity table)
#   P3DLAB_HUB_CPU_LIMIT  with "systemd": CPU limit per student, in cores [2]
#   P3DLAB_HUB_THREADS    threads of a student's kernel (torch, Numba, OpenMP) [2]
#   P3DLAB_HUB_FAST       "1": the lessons run at their small sizes (P3DLAB_FAST=1) for every student []
#   P3DLAB_HUB_KERNEL_IDLE  seconds before an idle kernel is shut down, even with its tab open [1800]
#   P3DLAB_HUB_SERVER_IDLE  seconds before an idle server is stopped (jupyterhub-idle-culler) [3600]
#
# The course id of nbgrader's exchange is the one in course/nbgrader_config.py (P3DLAB_COURSE_ID there).
import os
import pwd
import shutil
import sys
from pathlib import Path

from traitlets.config.loader import PyFileConfigLoader

c = get_config()  # noqa: F821 (JupyterHub provides get_config)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LESSONS = REPO / "lessons"
STUDENT_CONFIG = HERE / "student_config"  # nbgrader_config.py read by every student's server
ENV = os.environ.get


def read_names(text: str) -> set:
    """User names from a class list: one per line (or comma separated), blank lines and # comments skipped."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.update(name.strip() for name in line.split(",") if name.strip())
    return names


def course_id() -> str:
    """The course id nbgrader uses, read from the course's own configuration."""
    config = PyFileConfigLoader("nbgrader_config.py", str(REPO / "course")).load_config()
    return config.CourseDirectory.course_id


# --- who may log in -----------------------------------------------------------------------------
students_file = Path(ENV("P3DLAB_HUB_STUDENTS", HERE / "students.txt"))
students = read_names(students_file.read_text()) if students_file.exists() else set()
teachers = read_names(ENV("P3DLAB_HUB_TEACHERS", ""))
if not students:
    print(f"p3dlab hub: no students in {students_file}: only teachers can log in", file=sys.stderr)

AUTHENTICATORS = {"pam": "pam", "shared-password": "shared-password", "dummy": "dummy"}
auth = ENV("P3DLAB_HUB_AUTH", "pam")
c.JupyterHub.authenticator_class = AUTHENTICATORS.get(auth, auth)
c.Authenticator.allowed_users = students | teachers
c.Authenticator.admin_users = teachers
if auth == "shared-password":
    c.SharedPasswordAuthenticator.user_password = ENV("P3DLAB_HUB_PASSWORD")
    c.SharedPasswordAuthenticator.admin_password = ENV("P3DLAB_HUB_ADMIN_PASSWORD")

# --- the hub itself -----------------------------------------------------------------------------
state = Path(ENV("P3DLAB_HUB_STATE", "/srv/jupyterhub"))
state.mkdir(parents=True, exist_ok=True)
c.JupyterHub.bind_url = ENV("P3DLAB_HUB_URL", "http://:8000")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
# configurable-http-proxy from `make hub` (npm install into node_modules/), else the one on PATH
local_proxy = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
if local_proxy.exists():
    c.ConfigurableHTTPProxy.command = [str(local_proxy)]

# --- the students' servers ----------------------------------------------------------------------
SPAWNERS = {
    "localprocess": "jupyterhub.spawner.LocalProcessSpawner",
    "simple": "jupyterhub.spawner.SimpleLocalProcessSpawner",
    "systemd": "systemdspawner.SystemdSpawner",
}
spawner = ENV("P3DLAB_HUB_SPAWNER", "localprocess")
c.JupyterHub.spawner_class = SPAWNERS[spawner]
c.Spawner.default_url = "/lab/tree/lessons"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
if spawner == "simple":
    homes = Path(ENV("P3DLAB_HUB_HOMES", state / "home"))
    c.SimpleLocalProcessSpawner.home_dir_template = str(homes / "{username}")
if spawner == "systemd":
    # enforced by systemd (cgroups): a student over the limit loses their kernel, not the machine
    c.SystemdSpawner.mem_limit = ENV("P3DLAB_HUB_MEM_LIMIT", "2G")
    c.SystemdSpawner.cpu_limit = float(ENV("P3DLAB_HUB_CPU_LIMIT", "2"))
    c.SystemdSpawner.isolate_tmp = True
    c.SystemdSpawner.isolate_devices = True

threads = ENV("P3DLAB_HUB_THREADS", "2")
c.Spawner.environment = {
    # a few threads per student: twenty kernels of 16 threads each on one machine only thrash
    "OMP_NUM_THREADS": threads,
    "NUMBA_NUM_THREADS": threads,
    "OMP_WAIT_POLICY": "PASSIVE",
    "GOMP_SPINCOUNT": "1000",  # GNU OpenMP: spin about 15 us, then sleep (docs/performance.md)
    # nbgrader in the students' servers: the exchange and the course id (student_config/nbgrader_config.py)
    "JUPYTER_CONFIG_PATH": str(STUDENT_CONFIG),
    "P3DLAB_EXCHANGE": ENV("P3DLAB_EXCHANGE", "/srv/nbgrader/exchange"),
    "P3DLAB_COURSE_ID": course_id(),
}
if ENV("P3DLAB_HUB_FAST") == "1":
    c.Spawner.environment["P3DLAB_FAST"] = "1"

# An idle kernel holds 0.4-1.5 GB (docs/deployment.md): shut it down after P3DLAB_HUB_KERNEL_IDLE
# seconds without a running cell, even while its notebook is open. A busy kernel is never culled.
c.Spawner.args = [
    f"--MappingKernelManager.cull_idle_timeout={int(ENV('P3DLAB_HUB_KERNEL_IDLE', '1800'))}",
    "--MappingKernelManager.cull_interval=60",
    "--MappingKernelManager.cull_connected=True",
    "--MappingKernelManager.cull_busy=False",
]
if spawner == "simple" and os.getuid() == 0:
    c.Spawner.args.append("--allow-root")  # a container whose only user is root

# --- the lessons, copied into each student's home on every start, never over a student's file ---


def student_home(spawner) -> tuple:
    """(home folder, uid, gid) of the student a spawner starts; uid/gid None when the hub's own user runs it."""
    home = getattr(spawner, "home_dir", "")
    if home:  # SimpleLocalProcessSpawner: every student runs as the hub's user
        return Path(home), None, None
    entry = pwd.getpwnam(spawner.user.name)  # LocalProcessSpawner, SystemdSpawner: a Unix user per student
    return Path(entry.pw_dir), entry.pw_uid, entry.pw_gid


def copy_lessons(spawner) -> None:
    """Copy lessons/*.ipynb into ~/lessons/ of the student; a lesson already there is the student's work: kept."""
    home, uid, gid = student_home(spawner)
    dest = home / "lessons"
    for folder in (home, dest):
        if not folder.exists():
            folder.mkdir(parents=True)
            if uid is not None and os.getuid() == 0:
                os.chown(folder, uid, gid)
    copied = []
    for lesson in sorted(LESSONS.glob("*.ipynb")):
        target = dest / lesson.name
        if target.exists():
            continue
        shutil.copyfile(lesson, target)
        if uid is not None and os.getuid() == 0:
            os.chown(target, uid, gid)
        copied.append(lesson.name)
    if copied:
        spawner.log.info("p3dlab: copied %d lessons into %s", len(copied), dest)


c.Spawner.pre_spawn_hook = copy_lessons

# --- nbgrader's exchange: teachers release into it, students fetch and submit through it ---------
exchange = Path(c.Spawner.environment["P3DLAB_EXCHANGE"])
if not exchange.exists():
    try:
        exchange.mkdir(parents=True)
        exchange.chmod(0o1777)  # every student writes their submissions there (nbgrader's docs)
    except PermissionError:
        print(f"p3dlab hub: create {exchange} (mode 1777) for nbgrader's exchange", file=sys.stderr)

# --- idle servers stopped by jupyterhub-idle-culler, run by the hub as a service -----------------
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={int(ENV('P3DLAB_HUB_SERVER_IDLE', '3600'))}",
            "--cull-every=300",
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
