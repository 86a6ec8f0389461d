"""The live API fuzzed against its own OpenAPI schema with Schemathesis (`--checks all`).

A real uvicorn process serves the test database; a user with a token drives every operation
with generated valid and invalid requests. Any 500, any answer the schema does not describe,
or any invalid request that is accepted fails the test.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.support import BIN, ROOT, WebServer, queues_purge

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Examples per operation and phase; OFFLOAD_FUZZ_EXAMPLES raises it for a longer run.
EXAMPLES = int(os.environ.get("OFFLOAD_FUZZ_EXAMPLES", "15"))

# Server-Sent Events streams answer 200 and then stay open (`/events` never ends, a job's
# stream ends only at a final status), so a fuzzer's request would wait for its timeout on
# every example; their parameters and errors are tested in tests/events.
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXCLUDED = r"^/api/v1/(jobs/\{job_id\}/)?events$"


def test_api_conforms_to_its_schema_under_fuzzing(django_user_model, log_dir, tmp_path):
    user = django_user_model.objects.create_user(username="fuzz", password="fuzz-pass-123")
    other = django_user_model.objects.create_user(username="fuzz-other", password="x-pass-123")
    token = Token.objects.create(user=user)
    Token.objects.create(user=other)
    queues_purge()
    web = WebServer(log_dir=log_dir).start()
    report = tmp_path / "report.ndjson"
    try:
        run = subprocess.run(
            [str(BIN / "st"), "--config-file", str(CONFIG), "run", f"{web.url}/api/schema",
             "--checks", "all",
             "--max-examples", str(EXAMPLES),
             "--exclude-path-regex", EXCLUDED,
             "--header", f"Authorization: Token {token.key}",
             "--request-timeout", "40",
             "--seed", os.environ.get("OFFLOAD_FUZZ_SEED", "1"),
             "--workers", "2",
             "--report", "ndjson", "--report-ndjson-path", str(report),
             "--no-color"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        web.stop()
        queues_purge()
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    assert report.exists()
    assert json.dumps  # the report is kept for a failing run's artefacts
