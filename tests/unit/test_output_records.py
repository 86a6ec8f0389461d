"""A job's output file is recorded in one statement (a thumbnail job makes one per size),
and writing it again under its name updates its row: same id, the new size and job."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import FilePurpose, Job, StoredFile
from jobs.uploads import output_save

pytestmark = pytest.mark.django_db(transaction=True)


def _save(job: Job, content: bytes) -> StoredFile:
    return output_save(
        name=f"thumbnails/unit/{job.kind}.jpg",
        content=content,
        owner_id=job.owner_id,
        job_id=job.id,
        purpose=FilePurpose.THUMBNAIL,
        content_type="image/jpeg",
        width=4,
        height=3,
    )


def test_an_output_is_one_statement_and_saving_it_again_updates_its_row(user, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    first_job = Job.objects.create(kind="thumbnail", owner=user)
    second_job = Job.objects.create(kind="thumbnail", owner=user)

    with CaptureQueriesContext(connection) as queries:
        first = _save(first_job, b"first")
    again = _save(second_job, b"second, longer")

    assert [q["sql"].split()[0] for q in queries] == ["INSERT"]
    assert again.id == first.id
    assert again.created_at == first.created_at
    stored = StoredFile.objects.get()
    assert (stored.size, stored.job_id, stored.owner_id) == (14, second_job.id, user.id)
    assert (stored.width, stored.height, stored.original_name) == (4, 3, "thumbnail.jpg")
    assert (tmp_path / "thumbnails/unit/thumbnail.jpg").read_bytes() == b"second, longer"


def test_an_outputs_row_id_comes_from_its_name_even_over_an_older_row(user, settings, tmp_path):
    """A job knows its outputs' ids before their rows are written (they are written with its
    final write); a row written under the name with another id takes the derived one."""
    from jobs.uploads import output_id

    settings.MEDIA_ROOT = tmp_path
    job = Job.objects.create(kind="thumbnail", owner=user)
    name = f"thumbnails/unit/{job.kind}.jpg"
    StoredFile.objects.create(
        storage_name=name, owner=user, purpose=FilePurpose.THUMBNAIL, size=1, sha256="0" * 64
    )

    saved = _save(job, b"new")

    assert saved.id == output_id(name) == StoredFile.objects.get().id
    assert output_id(name) != output_id(name + "x")
