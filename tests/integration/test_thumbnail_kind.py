"""The thumbnail kind end to end: upload, submit, a real worker on RabbitMQ and PostgreSQL,
outputs downloaded through the API; bad images fail the job with nothing left behind."""

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from jobs.models import Job, StoredFile
from tests.files import PDF, jpeg_bytes, png_bomb, png_transparent, truncated_jpeg, upload
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _submit(client, **params):
    response = client.post("/api/v1/jobs", {"kind": "thumbnail", "params": params}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["queue"] == "bulk"
    return response.json()["id"]


def _final(job_id, timeout=60):
    def done():
        job = Job.objects.get(id=job_id)
        return job if job.is_finished else None

    return wait_for(done, timeout=timeout, what=f"job {job_id} to finish")


def _download(client, url) -> bytes:
    response = client.get(url)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def _thumbnail_files(key: str) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "thumbnails" / key
    return sorted(folder.glob("*")) if folder.exists() else []


def test_photo_to_thumbnails_with_orientation_and_no_metadata(worker, api, other_api):
    # 1200 x 800 stored sideways: EXIF orientation 6 means "rotate 90 degrees clockwise".
    upload_id = upload(api, "p.jpg", jpeg_bytes(1200, 800, orientation=6)).json()["id"]

    job_id = _submit(api, upload=upload_id, sizes=[256, 128], fit="contain", format="webp")
    job = _final(job_id)

    assert job.status == "succeeded", job.error
    result = job.result
    assert result["source"] == {"upload": upload_id, "width": 800, "height": 1200}
    assert [o["size"] for o in result["outputs"]] == [128, 256]
    for output in result["outputs"]:
        data = _download(api, output["url"])
        assert len(data) == output["bytes"]
        image = Image.open(io.BytesIO(data))
        assert image.format == "WEBP"
        assert image.size == (output["width"], output["height"])
        assert image.height == output["size"]  # portrait now: height is the long side
        assert image.width == round(output["size"] * 800 / 1200)
        assert "exif" not in image.info
        assert not image.getexif()
        # The red corner was top-left before rotating 90 degrees clockwise: now top-right.
        red = image.convert("RGB").getpixel((image.width - 3, 3))
        assert red[0] > 150 > red[2], red
        assert other_api.get(output["url"]).status_code == 404
    assert len(_thumbnail_files(upload_id)) == 2


def test_cover_fit_and_transparency_kept_in_png(worker, api):
    upload_id = upload(api, "t.png", png_transparent(400, 300)).json()["id"]

    job = _final(_submit(api, upload=upload_id, sizes=[64, 1000], fit="cover", format="PNG"))

    assert job.status == "succeeded", job.error
    small, large = job.result["outputs"]
    assert (small["width"], small["height"]) == (64, 64)
    assert (large["width"], large["height"]) == (300, 300)  # never scaled up
    image = Image.open(io.BytesIO(_download(api, small["url"])))
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0  # transparent corner kept
    assert image.getpixel((32, 32))[3] == 255


def test_transparency_is_flattened_on_white_for_jpeg(worker, api):
    upload_id = upload(api, "t.png", png_transparent(400, 300)).json()["id"]

    job = _final(_submit(api, upload=upload_id, sizes=[100], format="JPEG", quality=90))

    assert job.status == "succeeded", job.error
    image = Image.open(io.BytesIO(_download(api, job.result["outputs"][0]["url"])))
    assert image.mode == "RGB"
    assert min(image.getpixel((1, 1))) > 240  # white, not black


def test_running_the_same_spec_again_overwrites_instead_of_duplicating(worker, api):
    upload_id = upload(api, "p.jpg", jpeg_bytes(800, 600)).json()["id"]
    params = {"upload": upload_id, "sizes": [128, 256]}

    first = _final(_submit(api, **params))
    second = _final(_submit(api, **params))

    assert first.status == second.status == "succeeded"
    assert [o["file"] for o in first.result["outputs"]] == [
        o["file"] for o in second.result["outputs"]
    ]
    assert StoredFile.objects.filter(purpose="thumbnail").count() == 2
    assert len(_thumbnail_files(upload_id)) == 2
    assert StoredFile.objects.get(id=second.result["outputs"][0]["file"]).job_id == second.id


def test_a_truncated_jpeg_fails_with_no_output(worker, api):
    upload_id = upload(api, "half.jpg", truncated_jpeg()).json()["id"]

    job = _final(_submit(api, upload=upload_id, sizes=[128, 256]))

    assert job.status == "failed"
    assert job.error["type"] == "ThumbnailError"
    assert "truncated or damaged" in job.error["message"]
    assert job.error["retryable"] is False
    assert _thumbnail_files(upload_id) == []
    assert not StoredFile.objects.filter(purpose="thumbnail").exists()


@pytest.fixture
def stored(request):
    """Files put straight into storage (as staff tools would), removed afterwards."""
    names = []

    def put(name: str, content: bytes) -> str:
        names.append(default_storage.save(f"test-stored/{name}", ContentFile(content)))
        return names[-1]

    yield put
    for name in names:
        default_storage.delete(name)


def test_a_decompression_bomb_is_refused_before_decoding(worker, staff_api, stored):
    name = stored("bomb.png", png_bomb())

    job = _final(_submit(staff_api, file=name, sizes=[128]))

    assert job.status == "failed"
    assert job.error["type"] == "ImageTooLarge"
    assert "2,500,000,000 pixels" in job.error["message"]
    assert not StoredFile.objects.filter(purpose="thumbnail").exists()


def test_a_pdf_named_jpg_is_not_opened(worker, staff_api, stored):
    name = stored("document.jpg", PDF)

    job = _final(_submit(staff_api, file=name, sizes=[128]))

    assert job.status == "failed"
    assert job.error["type"] == "ThumbnailError"
    assert "not an image" in job.error["message"]
    assert not StoredFile.objects.filter(purpose="thumbnail").exists()


def test_staff_thumbnails_of_a_stored_file(worker, staff_api, stored):
    name = stored("photo.jpg", jpeg_bytes(1000, 500))

    job = _final(_submit(staff_api, file=name, sizes=[200], fit="cover"))

    assert job.status == "succeeded", job.error
    assert job.result["source"]["file"] == name
    assert (job.result["outputs"][0]["width"], job.result["outputs"][0]["height"]) == (200, 200)
