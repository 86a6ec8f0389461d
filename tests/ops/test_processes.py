"""The production process layout: every Procfile command starts what it names, and the systemd
units in deploy/ run the same commands."""

import configparser
import os
import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.support import BIN, ROOT, process_env

PROCESS_TYPES = {
    "release",
    "web",
    "worker",
    "worker-notifications",
    "worker-bulk",
    "beat",
    "flower",
}
WORKERS = ("worker", "worker-notifications", "worker-bulk")
UNITS = {
    "web": "offload-web.service",
    "worker": "offload-worker.service",
    "worker-notifications": "offload-worker-notifications@.service",
    "worker-bulk": "offload-worker-bulk.service",
    "beat": "offload-beat.service",
    "flower": "offload-flower.service",
}


def procfile_lines() -> dict[str, tuple[dict[str, str], list[str]]]:
    """Each process type's environment (`env K=V ...` in front) and command, with
    ${VAR:-default} expanded as a shell would with nothing set."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        args = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))
        env = {}
        if args[0] == "env":
            args.pop(0)
            while "=" in args[0]:
                key, _, value = args.pop(0).partition("=")
                env[key] = value
        commands[name.strip()] = (env, args)
    return commands


def procfile() -> dict[str, list[str]]:
    return {name: args for name, (_, args) in procfile_lines().items()}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    executable = BIN / args[0]
    assert executable.exists(), f"{args[0]} is not installed in the virtualenv"
    return subprocess.run(
        [str(executable), *args[1:]],
        cwd=ROOT,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def option(args: list[str], *names: str) -> str:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
    raise AssertionError(f"{names} not in {args}")


def test_procfile_names_every_process_type():
    assert set(procfile()) == PROCESS_TYPES


def test_web_is_gunicorn_with_uvicorn_workers_and_loads_the_app():
    args = procfile()["web"]
    assert args[0] == "gunicorn"
    assert option(args, "-k", "--worker-class") == "uvicorn_worker.UvicornWorker"

    # The web pools its database connections; nothing else does (prefork workers must not).
    env = procfile_lines()["web"][0]
    assert int(env["DATABASE_POOL_MAX_SIZE"]) > 0
    others = PROCESS_TYPES - {"web"}
    assert all("DATABASE_POOL_MAX_SIZE" not in procfile_lines()[name][0] for name in others)

    # --check-config imports the worker class and loads the ASGI application (with the pool
    # configured), then exits.
    checked = run([*args, "--check-config"], **env)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    broken = run(["gunicorn", "config.asgi:nothing_here", "-k", args[args.index("-k") + 1],
                  "--check-config"])  # fmt: skip
    assert broken.returncode != 0  # the check would notice an app that does not load


@pytest.mark.parametrize("name", WORKERS)
def test_workers_consume_declared_queues_of_the_celery_app(name):
    args = procfile()[name]
    assert args[:4] == ["celery", "-A", "config", "worker"]
    declared = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    assert set(option(args, "-Q").split(",")) <= declared

    # The app the command names loads and knows Offload's job tasks.
    report = run(["celery", "-A", "config", "inspect", "registered", "--help"])
    assert report.returncode == 0, report.stderr
    code = (
        "from config.celery_app import app; app.loader.import_default_modules(); "
        "print('\\n'.join(sorted(app.tasks)))"
    )
    listed = run(["python", "-c", code])
    assert listed.returncode == 0, listed.stderr
    assert "jobs.kind.demo.sleep" in listed.stdout.split()


def test_every_queue_has_a_worker_process():
    consumed = set()
    for name in WORKERS:
        consumed |= set(option(procfile()[name], "-Q").split(","))
    assert consumed == {queue.name for queue in settings.CELERY_TASK_QUEUES}


def test_notifications_run_on_a_thread_pool_and_every_instance_is_wanted():
    env, args = procfile_lines()["worker-notifications"]
    assert option(args, "--pool", "-P") == "threads"
    assert int(option(args, "-c", "--concurrency")) > 1
    # One short job per attempt, each recorded: no Celery line per task, in both layouts.
    assert env == {"CELERY_TASK_LOG_LEVEL": "WARNING"}
    text = (ROOT / "deploy" / UNITS["worker-notifications"]).read_text()
    assert "Environment=CELERY_TASK_LOG_LEVEL=WARNING" in text.splitlines()
    assert all(not procfile_lines()[name][0] for name in ("worker", "worker-bulk"))
    # The other queues keep processes: thumbnails and imports are CPU-bound, and their
    # kinds rely on Celery's time limits.
    assert all("--pool" not in procfile()[name] for name in ("worker", "worker-bulk"))
    wanted = unit("offload.target")["Unit"]["Wants"].split()
    instances = [w for w in wanted if w.startswith("offload-worker-notifications@")]
    assert len(instances) >= 2
    assert all(re.fullmatch(r"offload-worker-notifications@\d+\.service", i) for i in instances)
    assert {u for u in UNITS.values() if "@" not in u} <= set(wanted)


def test_beat_uses_offloads_scheduler():
    args = procfile()["beat"]
    assert args[:4] == ["celery", "-A", "config", "beat"]
    code = (
        "import django; django.setup(); from config.celery_app import app; "
        "from celery.utils.imports import symbol_by_name as s; "
        "print(s(app.conf.beat_scheduler).__module__)"
    )
    scheduler = run(["python", "-c", code])
    assert scheduler.returncode == 0, scheduler.stderr
    assert scheduler.stdout.strip() == "jobs.schedules.scheduler"


@pytest.mark.django_db
def test_flower_and_release_commands_exist():
    flower = procfile()["flower"]
    assert flower[:2] == ["python", "manage.py"]
    helped = run([*flower, "--help"])
    assert helped.returncode == 0, helped.stderr
    refused = run(flower, OFFLOAD_FLOWER_BASIC_AUTH="")
    assert refused.returncode != 0
    assert "OFFLOAD_FLOWER_BASIC_AUTH" in refused.stderr

    release = procfile()["release"]
    assert release[:3] == ["python", "manage.py", "migrate"]
    planned = run([*release[:3], "--plan"])
    assert planned.returncode == 0, planned.stderr


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((ROOT / "deploy" / name).read_text().replace("\\\n", " "))
    return parser


@pytest.mark.parametrize("process", sorted(UNITS))
def test_systemd_units_run_the_procfile_commands(process):
    service = unit(UNITS[process])["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0] == f"/srv/offload/.venv/bin/{procfile()[process][0]}"
    expected = procfile()[process]
    for flag in ("-A", "-Q", "-k", "--pool"):
        if flag in expected:
            assert option(command, flag) == option(expected, flag)
    assert command[1] == expected[1]
    assert service["EnvironmentFile"] == "/etc/offload/offload.env"
    assert service["Restart"] in {"always", "on-failure"}
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 0
    if process.startswith("worker"):
        # Warm shutdown: SIGTERM reaches only the main process, which waits for its jobs.
        assert service["KillMode"] == "mixed"
        assert int(service["TimeoutStopSec"]) >= 60


def test_systemd_units_are_well_formed():
    analyze = Path("/usr/bin/systemd-analyze")
    if not analyze.exists():
        pytest.skip("systemd-analyze is not installed")
    for name in [*UNITS.values(), "offload.target"]:
        text = (ROOT / "deploy" / name).read_text()
        assert "[Install]" in text
    result = subprocess.run(
        [str(analyze), "verify", "--man=no", *(str(ROOT / "deploy" / n) for n in UNITS.values())],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "X": secrets.token_hex(2)},
    )  # fmt: skip
    # Paths under /srv/offload do not exist on a test machine; anything else is a mistake.
    problems = [
        line for line in result.stderr.splitlines()
        if line.strip() and "/srv/offload" not in line and "offload.target" not in line
        and "User=" not in line and "Failed to" not in line
    ]  # fmt: skip
    assert problems == [], result.stderr
