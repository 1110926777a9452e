"""A real django-q2 cluster (`manage.py qcluster`) in a throwaway Django project.

The project lives in a temp dir: a settings module, a tasks module (tasks that sleep, or
kill their own worker so reincarnations show) and a migrated SQLite database. Each cluster
runs in its own process group and is stopped by that group's id at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET_KEY = "qwatch-tests-secret-key-0123456789abcdefghij"

SETTINGS = """\
SECRET_KEY = {secret!r}
INSTALLED_APPS = ["django_q"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
Q_CLUSTER = {q_cluster!r}
{more}"""

TASKS = '''\
"""Tasks the tests enqueue."""
import os
import time


def nap(seconds):
    time.sleep(seconds)
    return seconds


def die():
    # A worker that dies mid-task: the sentinel reincarnates it.
    os._exit(3)
'''

ENQUEUE = """\
import sys
import django
django.setup()
from django_q.tasks import async_task
for spec in sys.argv[1:]:
    name, _, arg = spec.partition(":")
    args = (float(arg),) if arg else ()
    async_task("qtasks." + name, *args)
"""


@dataclass
class QCluster:
    """One running `qcluster`; `pid` is its main process and process group."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the main process, as a supervisor would; SIGKILL to the group if it hangs.

        Django Q's guard stops its own workers in order; SIGTERM to the whole group makes
        them die under it and the guard then waits out its timeout.
        """
        if self.process.poll() is not None:
            self._reap_group()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        with _suppress_lookup():
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        # Workers outlive a killed parent for a moment; the group id still names them.
        with _suppress_lookup():
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class DjangoProject:
    root: Path
    name: str
    redis_url: str
    workers: int = 2
    extra: dict[str, object] = field(default_factory=dict)
    clusters: list[QCluster] = field(default_factory=list)
    # Python appended to the settings module (CACHES, another DATABASES…), and a database
    # of the project's own instead of the shared migrated SQLite copy (then migrated here).
    more_settings: str = ""
    own_database: bool = False

    settings_module = "qsettings"

    @property
    def q_cluster(self) -> dict[str, object]:
        return {
            "name": self.name,
            "workers": self.workers,
            "redis": self.redis_url,
            "timeout": 60,
            "retry": 120,
            "max_attempts": 1,
            "catch_up": False,
            **self.extra,
        }

    def write(self, migrated_db: Path | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        db = self.root / "db.sqlite3"
        (self.root / f"{self.settings_module}.py").write_text(
            SETTINGS.format(
                secret=SECRET_KEY, db=str(db), q_cluster=self.q_cluster, more=self.more_settings
            )
        )
        (self.root / "qtasks.py").write_text(TASKS)
        if migrated_db is not None and not self.own_database:
            shutil.copy(migrated_db, db)
        else:
            self.manage("migrate", "--noinput", "-v", "0")

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QWATCH_")}
        env["DJANGO_SETTINGS_MODULE"] = self.settings_module
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env.get("PYTHONPATH", "")])
        env.update(more)
        return env

    def run_python(self, source: str, *args: str) -> str:
        """Run `source` with the project's settings set up (django.setup() first); its stdout."""
        done = subprocess.run(
            [sys.executable, "-c", f"import django\ndjango.setup()\n{source}", *args],
            cwd=self.root,
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=self.root,
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_cluster(self, *args: str, **env: str) -> QCluster:
        """`qcluster *args` (e.g. "--name", "long") with `env` added (Q_CLUSTER_NAME=…)."""
        log = self.root / f"qcluster-{len(self.clusters)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "django", "qcluster", *args],
                cwd=self.root,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cluster = QCluster(process, log)
        self.clusters.append(cluster)
        return cluster

    def enqueue(self, *tasks: str) -> None:
        """Queue tasks by name, e.g. enqueue("nap:0.5", "die")."""
        subprocess.run(
            [sys.executable, "-c", ENQUEUE, *tasks],
            cwd=self.root,
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop_all(self) -> None:
        for cluster in self.clusters:
            cluster.stop()


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError | PermissionError)


@pytest.fixture(scope="session")
def _migrated_django_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once per run; every project copies the result (migrate takes seconds)."""
    project = DjangoProject(tmp_path_factory.mktemp("django-migrate"), "migrate", "redis://x")
    project.write(migrated_db=None)
    return project.root / "db.sqlite3"


@pytest.fixture
def django_project_factory(
    tmp_path_factory: pytest.TempPathFactory, _migrated_django_db: Path
) -> Iterator[Callable[..., DjangoProject]]:
    projects: list[DjangoProject] = []

    def make(
        redis_url: str,
        name: str = "qwatchtest",
        workers: int = 2,
        *,
        more_settings: str = "",
        own_database: bool = False,
        **extra: object,
    ):
        project = DjangoProject(
            tmp_path_factory.mktemp("django-project"),
            name,
            redis_url,
            workers,
            dict(extra),
            more_settings=more_settings,
            own_database=own_database,
        )
        project.write(_migrated_django_db)
        projects.append(project)
        return project

    yield make
    for project in projects:
        project.stop_all()


@pytest.fixture
def django_project(django_project_factory, redis_server) -> DjangoProject:
    return django_project_factory(redis_server.url)
