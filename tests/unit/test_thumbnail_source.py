"""Where the claim read cannot look a thumbnail's source up (a database other than
PostgreSQL), the kind asks itself, with the same answers and the same ownership rules."""

import hashlib

import pytest
from django.core.files.base import ContentFile

from jobs import lifecycle
from jobs.errors import NotFound, PermissionDenied
from jobs.kinds.thumbnail import Source, _source_resolve
from jobs.models import Job, JobStatus
from jobs.runtime import JobRun
from jobs.uploads import upload_create
from tests.files import jpeg_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def _resolve(job: Job, *, claim_read: bool) -> Source | str:
    claim = lifecycle.job_claim(job_id=job.id, kind="thumbnail")
    assert ("upload_name" in claim["claimed"]) is True  # these tests run on PostgreSQL
    run = JobRun(
        id=job.id,
        kind=job.kind,
        params=job.params,
        attempt=1,
        claimed=claim["claimed"] if claim_read else {},
    )
    try:
        return _source_resolve(run)
    except (NotFound, PermissionDenied) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize(
    "case", ["own upload", "their upload", "gone upload", "staff file", "non-staff file"]
)
def test_the_claim_read_and_the_kinds_own_query_agree(case, settings, tmp_path, django_user_model):
    settings.MEDIA_ROOT = tmp_path
    owner = django_user_model.objects.create_user("owner", is_staff=case == "staff file")
    other = django_user_model.objects.create_user("other")
    photo = upload_create(
        owner=other if case == "their upload" else owner,
        file=ContentFile(jpeg_bytes(40, 30), name="p.jpg"),
    )
    if case.endswith("file"):
        params = {"file": photo.storage_name}
    elif case == "gone upload":
        params = {"upload": "5f0e6a34-55c1-4fb4-9d2c-0d3b8c0f0a11"}
    else:
        params = {"upload": str(photo.id)}
    job = Job.objects.create(kind="thumbnail", owner=owner, status=JobStatus.QUEUED, params=params)

    from_claim = _resolve(job, claim_read=True)

    assert from_claim == _resolve(job, claim_read=False)
    if case == "own upload":
        assert from_claim == Source(photo.storage_name, str(photo.id), owner.id, params)
    elif case == "staff file":
        key = "stored-" + hashlib.sha256(photo.storage_name.encode()).hexdigest()[:24]
        assert from_claim == Source(photo.storage_name, key, owner.id, params)
    elif case == "non-staff file":
        assert from_claim.startswith("PermissionDenied")
    else:
        assert from_claim.startswith("NotFound")
