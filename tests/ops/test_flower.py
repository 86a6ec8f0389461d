"""Flower as Offload runs it: never open without credentials."""

import subprocess

import httpx
import pytest

from tests.support import BIN, ROOT, free_port, process_env, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("credentials", "message"),
    [("", "Flower needs credentials"), ("ops", "has no password"), (":secret", "has no password")],
)
def test_flower_refuses_to_start_without_credentials(credentials, message):
    run = subprocess.run(
        [str(BIN / "python"), "manage.py", "flower"],
        cwd=ROOT,
        env=process_env(
            OFFLOAD_FLOWER_BASIC_AUTH=credentials, OFFLOAD_FLOWER_PORT=str(free_port())
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode != 0
    assert message in run.stderr


@pytest.fixture
def flower(tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "flower"],
        cwd=ROOT,
        env=process_env(
            OFFLOAD_FLOWER_BASIC_AUTH="ops:first-pass,viewer:second-pass",
            OFFLOAD_FLOWER_PORT=str(port),
            OFFLOAD_FLOWER_URL_PREFIX="flower",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/flower"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "flower.log").read_text()[-3000:])
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, interval=0.2, what="flower")
    yield url
    process.terminate()
    process.wait(timeout=20)
    log.close()


def test_flower_answers_only_with_credentials(flower):
    pages = ["/", "/workers", "/tasks", "/api/workers"]
    for page in pages:
        assert httpx.get(flower + page).status_code == 401, page
        assert httpx.get(flower + page, auth=("ops", "wrong")).status_code == 401, page
    assert httpx.get(flower + "/", auth=("ops", "first-pass")).status_code == 200
    assert httpx.get(flower + "/workers", auth=("viewer", "second-pass")).status_code == 200
    # Not under the prefix: nothing there.
    assert (
        httpx.get(flower.rsplit("/", 1)[0] + "/workers", auth=("ops", "first-pass")).status_code
        == 404
    )


def test_flower_serves_prometheus_metrics(flower):
    response = httpx.get(flower + "/metrics")

    assert response.status_code == 200
    assert "# TYPE flower_events_total counter" in response.text
    assert "# TYPE flower_worker_online gauge" in response.text
