"""`manage.py jobs`: each subcommand run as a real process on the test database, with a real
worker running the jobs, and its exit code checked as a script would."""

import os
import pty
import re
import subprocess
import uuid

import pytest

from jobs.models import Job
from jobs.services import JobSpec, job_submit
from tests.support import BIN, ROOT, process_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def jobs_cmd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "python"), "manage.py", "jobs", *args],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submitted_id(output: str) -> str:
    return re.search(r"^([0-9a-f-]{36}) submitted", output, re.MULTILINE).group(1)


def test_submit_and_wait_for_success_exits_0(worker):
    run = jobs_cmd("submit", "demo.sleep", "--param", "seconds=0.3", "--param", "message=hi",
                   "--wait", "--timeout", "60")  # fmt: skip

    assert run.returncode == 0, run.stderr
    job = Job.objects.get(id=submitted_id(run.stdout))
    assert job.status == "succeeded"
    assert job.owner is None  # the operator submits system jobs
    assert job.params["message"] == "hi"
    assert '"message": "hi"' in run.stdout  # the result is printed at the end


def test_submit_and_wait_for_a_failure_exits_1_with_the_error(worker):
    run = jobs_cmd("submit", "demo.sleep", "--params", '{"fail": "error", "message": "boom"}',
                   "--wait", "--timeout", "60")  # fmt: skip

    assert run.returncode == 1
    assert "DemoError: boom" in run.stdout
    assert Job.objects.get(id=submitted_id(run.stdout)).status == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo.sleep", "--param", "seconds=-1"), "seconds"),
        (("no.such.kind",), "Unknown job kind 'no.such.kind'"),
        (("demo.sleep", "--param", "oops"), "KEY=VALUE"),
        (("demo.sleep", "--params", "[1, 2]"), "Bad params"),
        (("demo.sleep", "--priority", "12"), "priority must be between 0 and 9"),
    ],
)
def test_bad_submit_exits_2_and_records_nothing(args, message):
    run = jobs_cmd("submit", *args)

    assert run.returncode == 2
    assert message in run.stderr
    assert not Job.objects.exists()


def test_status_of_an_unknown_or_malformed_id_exits_4():
    missing = jobs_cmd("status", str(uuid.uuid4()))
    malformed = jobs_cmd("status", "not-a-uuid")

    assert (missing.returncode, malformed.returncode) == (4, 4)
    assert "No job" in missing.stderr
    assert "job ids are UUIDs" in malformed.stderr


def test_a_user_sees_only_their_own_jobs(django_user_model):
    alice = django_user_model.objects.create_user(username="alice")
    bob = django_user_model.objects.create_user(username="bob")
    bobs, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 60}), owner=bob)

    as_alice = jobs_cmd("--user", "alice", "status", str(bobs.id))
    as_bob = jobs_cmd("--user", "bob", "status", str(bobs.id))
    alice_cancel = jobs_cmd("--user", "alice", "cancel", str(bobs.id))
    unknown_user = jobs_cmd("--user", "nobody", "list")

    assert as_alice.returncode == 4
    assert as_bob.returncode == 0
    assert f"id        {bobs.id}" in as_bob.stdout
    assert alice_cancel.returncode == 4
    assert unknown_user.returncode == 2
    bobs.refresh_from_db()
    assert bobs.status != "cancelled"  # alice's attempt touched nothing
    assert alice.jobs.count() == 0


def test_cancel_then_watch_exits_3(worker):
    job, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 60}), owner=None)
    wait_for(lambda: Job.objects.get(id=job.id).status == "running", what="job running")

    cancel = jobs_cmd("cancel", str(job.id))
    watch = jobs_cmd("watch", str(job.id), "--timeout", "30")
    again = jobs_cmd("cancel", str(job.id))

    assert cancel.returncode == 0
    assert f"{job.id} cancelled" in cancel.stdout
    assert watch.returncode == 3
    assert again.returncode == 2  # a cancelled job cannot be cancelled twice
    assert "only scheduled, queued, retrying or running" in again.stderr


def test_watch_gives_up_after_its_timeout_with_exit_5(worker):
    job, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 60}), owner=None)

    watch = jobs_cmd("watch", str(job.id), "--timeout", "1")

    assert watch.returncode == 5
    job.refresh_from_db()
    assert job.status in {"queued", "running"}
    jobs_cmd("cancel", str(job.id))


def test_retry_and_requeue_dead(worker):
    failed = jobs_cmd("submit", "demo.sleep", "--param", "fail=error", "--wait")
    failed_id = submitted_id(failed.stdout)
    spec = JobSpec(kind="demo.sleep", params={"fail": "transient", "fail_attempts": 9})
    dead = [job_submit(spec=spec, owner=None)[0] for _ in range(2)]
    wait_for(lambda: Job.objects.filter(status="dead").count() == 2, timeout=60, what="2 dead")

    retry = jobs_cmd("retry", failed_id)
    requeue = jobs_cmd("requeue-dead", "--kind", "demo.sleep")

    assert retry.returncode == 0
    assert f"{failed_id} queued" in retry.stdout
    assert requeue.returncode == 0
    assert "2 dead job(s) requeued" in requeue.stdout
    for job in dead:
        job.refresh_from_db()
        assert len(job.history) == 1
        assert job.history[0]["status"] == "dead"


def test_list_filters_and_stats_count(worker):
    effects = [
        job_submit(spec=JobSpec(kind="test.effect", params={"seconds": 0}), owner=None)[0].id
        for _ in range(2)
    ]
    wait_for(
        lambda: Job.objects.filter(id__in=effects, status="succeeded").count() == 2,
        what="2 effect jobs succeeded",
    )
    cancelled, _ = job_submit(spec=JobSpec(kind="demo.sleep", params={"seconds": 60}), owner=None)
    jobs_cmd("cancel", str(cancelled.id))

    listing = jobs_cmd("list", "--status", "cancelled")
    bad = jobs_cmd("list", "--status", "nonsense")
    stats = jobs_cmd("stats")

    assert listing.returncode == 0
    assert listing.stdout.split() == [
        str(cancelled.id), "demo.sleep", "cancelled", "-", *listing.stdout.split()[4:]
    ]  # fmt: skip
    assert bad.returncode == 2
    assert "Unknown status nonsense" in bad.stderr
    rows = {tuple(line.split()) for line in stats.stdout.splitlines()}
    assert ("demo.sleep", "cancelled", "1") in rows
    assert ("test.effect", "succeeded", "2") in rows


def test_watch_in_a_terminal_redraws_one_progress_bar(worker):
    job, _ = job_submit(
        spec=JobSpec(kind="demo.sleep", params={"seconds": 3, "steps": 6}), owner=None
    )
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "jobs", "watch", str(job.id), "--timeout", "60"],
        cwd=ROOT, env=process_env(), stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command has exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=30) == 0
    text = screen.decode()

    frames = [frame for frame in text.split("\r") if frame.startswith("\x1b[2K[")]
    percents = [float(m) for m in re.findall(r"\]\s+([\d.]+)%", text)]
    assert len(frames) >= 3  # redrawn in place, not one line per change
    assert percents == sorted(percents)
    assert percents[-1] == 100.0
    assert "succeeded" in frames[-1]
    assert "result" in text
