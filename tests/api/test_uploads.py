"""Uploads through the API: type from content, per-type size limits, privacy, and every
refusal leaves nothing stored."""

import hashlib
from pathlib import Path

import pytest
from django.conf import settings

from jobs.models import Job, StoredFile
from tests.files import HTML, PDF, contacts_csv, jpeg_bytes, png_bomb, upload

pytestmark = pytest.mark.django_db


def _stored_files(user) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "uploads" / str(user.pk)
    return sorted(folder.glob("*")) if folder.exists() else []


def _nothing_stored(user):
    assert not StoredFile.objects.filter(owner=user).exists()
    assert _stored_files(user) == []


def test_an_image_upload_is_stored_with_its_facts(api, user):
    data = jpeg_bytes(640, 480)

    response = upload(api, "holiday photo.JPG", data, "application/octet-stream")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["content_type"] == "image/jpeg"
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"]) == (640, 480)
    assert body["name"] == "holiday photo.JPG"
    stored = StoredFile.objects.get(id=body["id"])
    assert stored.owner == user
    assert stored.purpose == "upload"
    assert [path.read_bytes() for path in _stored_files(user)] == [data]
    assert response["Location"] == body["url"]


def test_the_type_comes_from_the_content_not_the_name(api):
    response = upload(api, "photo.jpg", contacts_csv(3), "image/jpeg")

    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == "text/csv"
    assert response.json()["width"] is None


@pytest.mark.parametrize(
    ("content", "label"), [(PDF, "a PDF document"), (HTML, "an HTML document")]
)
def test_a_pdf_or_html_named_jpg_is_refused(api, user, content, label):
    response = upload(api, "cat.jpg", content, "image/jpeg")

    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_type"
    assert label in error["message"]
    assert "not from the file name" in error["message"]
    _nothing_stored(user)


def test_an_empty_file_is_refused(api, user):
    response = upload(api, "empty.csv", b"", "text/csv")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_file"
    assert "empty" in response.json()["error"]["message"]
    _nothing_stored(user)


def test_an_upload_over_its_types_limit_is_413(api, user, settings):
    settings.OFFLOAD_UPLOAD_MAX_BYTES = {"image": 10 * 1024 * 1024, "csv": 100_000}
    data = contacts_csv(5000)  # ~300 KB
    assert len(data) > 100_000

    response = upload(api, "contacts.csv", data, "text/csv")

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert "100000 bytes" in error["message"]
    assert "CSV" in error["message"]
    _nothing_stored(user)
    # The same bytes are fine as far as the image limit goes: the limit is per type.
    assert upload(api, "small.csv", contacts_csv(10), "text/csv").status_code == 201


def test_a_body_over_every_limit_is_refused_before_it_is_read(api, user, settings):
    settings.OFFLOAD_UPLOAD_MAX_BYTES = {"image": 1000, "csv": 1000}

    response = upload(api, "big.jpg", jpeg_bytes(800, 600), "image/jpeg")

    assert response.status_code == 413
    assert "1000 bytes" in response.json()["error"]["message"]
    _nothing_stored(user)


def test_a_decompression_bomb_png_is_refused_at_upload(api, user):
    data = png_bomb()
    assert len(data) < 2_000_000

    response = upload(api, "bomb.png", data, "image/png")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_too_large"
    assert "2,500,000,000 pixels" in error["message"]
    assert "not decoded" in error["message"]
    _nothing_stored(user)


def test_a_request_without_a_file_is_refused(api):
    response = api.post("/api/v1/uploads", {"name": "x"}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]


def test_json_is_not_an_upload(api):
    response = api.post("/api/v1/uploads", {"file": "abc"}, format="json")

    assert response.status_code == 415


def test_uploads_are_private_to_their_owner(api, other_api):
    body = upload(api, "a.jpg", jpeg_bytes(100, 100)).json()

    assert api.get(f"/api/v1/uploads/{body['id']}").status_code == 200
    assert other_api.get(f"/api/v1/uploads/{body['id']}").status_code == 404
    assert other_api.get(f"/api/v1/files/{body['id']}").status_code == 404
    assert api.get("/api/v1/uploads/not-a-uuid").status_code == 404


def test_the_owner_downloads_the_file(api):
    data = jpeg_bytes(100, 100)
    body = upload(api, "a.jpg", data).json()

    response = api.get(f"/api/v1/files/{body['id']}", HTTP_ACCEPT="image/*")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("kind", ["thumbnail", "csv_import"])
def test_another_users_upload_in_params_is_404_and_no_job(api, other_api, kind):
    content = jpeg_bytes(100, 100) if kind == "thumbnail" else contacts_csv(2)
    theirs = upload(other_api, "theirs", content).json()["id"]

    response = api.post("/api/v1/jobs", {"kind": kind, "params": {"upload": theirs}}, format="json")

    assert response.status_code == 404
    assert theirs in response.json()["error"]["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("kind", ["thumbnail", "csv_import"])
def test_submits_in_turn_each_see_their_own_owner(
    api, other_api, user, other_user, kind, no_worker
):
    # One thread validates every submit with the same params serializer per kind (its
    # context is set per submit): the owner of one submit never carries over to the next.
    content = jpeg_bytes(100, 100) if kind == "thumbnail" else contacts_csv(2)
    theirs = upload(other_api, "theirs", content).json()["id"]
    mine = upload(api, "mine", content).json()["id"]

    answers = [
        client.post("/api/v1/jobs", {"kind": kind, "params": {"upload": upload_id}}, format="json")
        for client, upload_id in [
            (other_api, theirs),
            (api, theirs),
            (api, mine),
            (other_api, mine),
        ]
    ]

    assert [answer.status_code for answer in answers] == [202, 404, 202, 404]
    assert sorted(Job.objects.values_list("owner_id", flat=True)) == sorted(
        [other_user.id, user.id]
    )


def test_an_upload_of_the_wrong_type_for_the_kind_is_400(api):
    csv_upload = upload(api, "c.csv", contacts_csv(2)).json()["id"]
    image_upload = upload(api, "i.jpg", jpeg_bytes(100, 100)).json()["id"]

    thumb = api.post(
        "/api/v1/jobs", {"kind": "thumbnail", "params": {"upload": csv_upload}}, format="json"
    )
    imp = api.post(
        "/api/v1/jobs", {"kind": "csv_import", "params": {"upload": image_upload}}, format="json"
    )

    assert thumb.status_code == 400
    assert "not an image" in str(thumb.json()["error"]["fields"])
    assert imp.status_code == 400
    assert "not a CSV" in str(imp.json()["error"]["fields"])
    assert Job.objects.count() == 0


def test_only_staff_may_name_a_stored_file(api, staff_api):
    upload(api, "i.jpg", jpeg_bytes(100, 100))
    name = StoredFile.objects.get().storage_name

    refused = api.post(
        "/api/v1/jobs", {"kind": "thumbnail", "params": {"file": name}}, format="json"
    )
    missing = staff_api.post(
        "/api/v1/jobs", {"kind": "thumbnail", "params": {"file": "../../etc/passwd"}}, format="json"
    )

    assert refused.status_code == 403
    assert missing.status_code == 400
    assert Job.objects.count() == 0


def test_the_stream_stops_at_the_limit_without_reading_the_rest(settings):
    from jobs.uploads import UploadStreamHandler, UploadTooLarge

    settings.OFFLOAD_UPLOAD_MAX_BYTES = {"image": 200_000, "csv": 200_000}
    handler = UploadStreamHandler()
    handler.new_file("file", "big.csv", "text/csv", None)
    chunk = contacts_csv(2000)[:65536]
    fed = 0

    def feed() -> None:
        nonlocal fed
        for _ in range(1000):  # 65 MB if it never stopped
            handler.receive_data_chunk(chunk, fed)
            fed += len(chunk)

    with pytest.raises(UploadTooLarge, match="200000 bytes"):
        feed()
    assert fed <= 200_000
