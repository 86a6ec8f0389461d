"""Uploads and the files jobs make: storing, sniffing, owning and deleting them.

An upload's type is decided from its first bytes, never from its name or the declared
content type; each type has its own size limit (settings.OFFLOAD_UPLOAD_MAX_BYTES). The
request body streams through `UploadStreamHandler` to a temporary file, hashed on the way,
and the upload stops as soon as it passes its type's limit, so memory stays bounded and an
oversized upload costs no more than its limit in disk.

Files are private to their owner: anyone else's file id is "not found".
"""

import codecs
import hashlib
import logging
import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from jobs import lifecycle
from jobs.errors import NotFound, OffloadError
from jobs.models import FilePurpose, Job, StoredFile
from jobs.retention import retention_register

if TYPE_CHECKING:
    from jobs.runtime import JobRun

logger = logging.getLogger(__name__)

SNIFF_BYTES = 4096


@dataclass(frozen=True)
class FileType:
    content_type: str
    category: str  # "image", "csv", or "" when refused
    label: str
    extension: str


IMAGE_TYPES = {
    "image/jpeg": FileType("image/jpeg", "image", "a JPEG image", ".jpg"),
    "image/png": FileType("image/png", "image", "a PNG image", ".png"),
    "image/webp": FileType("image/webp", "image", "a WebP image", ".webp"),
}
CSV_TYPE = FileType("text/csv", "csv", "a UTF-8 text (CSV) file", ".csv")
_REFUSED = {
    "application/pdf": "a PDF document",
    "text/html": "an HTML document",
    "image/gif": "a GIF image",
    "application/zip": "a ZIP archive (or an Office document)",
    "application/octet-stream": "binary data that is not an accepted type",
    "text/plain; charset=unknown": "text that is not UTF-8",
}
ACCEPTED = "JPEG, PNG or WebP images and UTF-8 CSV files"


class UploadRefused(OffloadError):
    code = "unsupported_type"
    status = 415


class UploadTooLarge(OffloadError):
    code = "too_large"
    status = 413


def content_sniff(head: bytes) -> FileType:
    """The type of a file from its first bytes (at least SNIFF_BYTES when the file has
    them). Unknown or refused types come back with an empty category."""
    for magic, content_type in (
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
    ):
        if head.startswith(magic):
            return IMAGE_TYPES[content_type]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE_TYPES["image/webp"]
    refused = None
    if head.startswith(b"%PDF-"):
        refused = "application/pdf"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        refused = "image/gif"
    elif head.startswith(b"PK\x03\x04"):
        refused = "application/zip"
    elif b"\x00" in head:
        refused = "application/octet-stream"
    else:
        text = head.removeprefix(codecs.BOM_UTF8)
        try:
            # The head may end inside a multi-byte character: decode incrementally.
            codecs.getincrementaldecoder("utf-8")().decode(text, final=False)
        except UnicodeDecodeError:
            refused = "text/plain; charset=unknown"
        else:
            start = text.lstrip()[:64].lower()
            # Markup (HTML, XML, SVG) is never a CSV: serving it back could run in a browser.
            if start.startswith(b"<") and b">" in start:
                refused = "text/html"
    if refused is not None:
        return FileType(refused, "", _REFUSED[refused], "")
    return CSV_TYPE


def upload_limit(file_type: FileType | None) -> int:
    limits = settings.OFFLOAD_UPLOAD_MAX_BYTES
    if file_type is None or not file_type.category:
        return max(limits.values())
    return limits[file_type.category]


def _too_large(file_type: FileType | None, size: int | None = None) -> UploadTooLarge:
    limit = upload_limit(file_type)
    what = file_type.label if file_type is not None and file_type.category else "any upload"
    sized = f" ({size} bytes)" if size is not None else ""
    return UploadTooLarge(
        f"The file{sized} is over the limit for {what}: {limit} bytes "
        f"({limit / 1024 / 1024:.1f} MiB).",
        fields={"file": [f"over the {limit} byte limit"]},
    )


class UploadStreamHandler(TemporaryFileUploadHandler):
    """Streams an uploaded file to a temporary file, hashing it and sniffing its first
    bytes on the way; stops the request as soon as it passes its type's size limit."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.sha256 = hashlib.sha256()
        self.head = b""
        self.received = 0
        self.file_type: FileType | None = None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self.file_type is None:
            self.head += raw_data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.file_type = content_sniff(self.head)
                if not self.file_type.category:
                    raise upload_refusal(self.file_type)
        self.received += len(raw_data)
        if self.received > upload_limit(self.file_type):
            raise _too_large(self.file_type)
        self.sha256.update(raw_data)
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int) -> UploadedFile:
        uploaded = super().file_complete(file_size)
        uploaded.offload_sha256 = self.sha256.hexdigest()
        uploaded.offload_head = self.head
        return uploaded


def upload_refusal(file_type: FileType) -> UploadRefused:
    return UploadRefused(
        f"The file's content is {file_type.label} ({file_type.content_type}); uploads accept "
        f"{ACCEPTED}. The type is decided from the content, not from the file name or the "
        "declared content type.",
        fields={"file": [f"unsupported content: {file_type.content_type}"]},
    )


def _head_and_hash(file: File) -> tuple[bytes, str]:
    head = getattr(file, "offload_head", None)
    digest = getattr(file, "offload_sha256", None)
    if head is not None and digest is not None:
        return head, digest
    sha = hashlib.sha256()
    file.seek(0)
    head = b""
    for chunk in file.chunks():
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        sha.update(chunk)
    file.seek(0)
    return head, sha.hexdigest()


def image_open(file: Any) -> Any:
    """Open an image with the allowed decoders only, reading its header and nothing else,
    and refuse it when it has more pixels than OFFLOAD_IMAGE_MAX_PIXELS."""
    from PIL import Image

    file.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow's own guard warns above MAX_IMAGE_PIXELS and raises above twice that.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file, formats=settings.OFFLOAD_IMAGE_DECODERS)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLarge(
            f"The image has {pixels}; the limit is {settings.OFFLOAD_IMAGE_MAX_PIXELS:,} "
            "pixels. It was not decoded. Scale it down before uploading.",
            fields={"file": ["too many pixels"]},
        ) from exc
    pixels_check(*image.size)
    return image


def image_dimensions(file: Any) -> tuple[int, int]:
    """Width and height from the image header (nothing is decoded); refuses images over
    the pixel limit and anything no allowed decoder can open."""
    from PIL import UnidentifiedImageError

    try:
        with image_open(file) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OffloadError(
            f"The file starts like an image but its header cannot be read ({exc}).",
            code="invalid_image",
            fields={"file": ["unreadable image header"]},
        ) from exc
    finally:
        file.seek(0)


class ImageTooLarge(OffloadError):
    code = "image_too_large"


def pixels_check(width: int, height: int) -> None:
    limit = settings.OFFLOAD_IMAGE_MAX_PIXELS
    if width * height > limit:
        raise ImageTooLarge(
            f"The image is {width} x {height} pixels ({width * height:,} pixels); the limit is "
            f"{limit:,} pixels. It was not decoded. Scale it down before uploading.",
            fields={"file": [f"over the {limit} pixel limit"]},
        )


def _display_name(name: str | None) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:255]


def upload_create(*, owner: AbstractBaseUser, file: UploadedFile) -> StoredFile:
    """Store an uploaded file for its owner and record it. The type comes from the
    content; the size is checked against that type's limit; nothing is stored when a
    check fails."""
    size = file.size or 0
    if size == 0:
        raise OffloadError(
            "The file is empty: there is nothing to process.",
            code="empty_file",
            fields={"file": ["empty"]},
        )
    head, digest = _head_and_hash(file)
    file_type = content_sniff(head)
    if not file_type.category:
        raise upload_refusal(file_type)
    if size > upload_limit(file_type):
        raise _too_large(file_type, size)
    width = height = None
    if file_type.category == "image":
        width, height = image_dimensions(file)
    upload_id = uuid.uuid4()
    name = f"uploads/{owner.pk}/{upload_id}{file_type.extension}"
    stored_name = default_storage.save(name, file)
    try:
        return StoredFile.objects.create(
            id=upload_id,
            owner=owner,
            purpose=FilePurpose.UPLOAD,
            storage_name=stored_name,
            original_name=_display_name(file.name),
            content_type=file_type.content_type,
            size=size,
            sha256=digest,
            width=width,
            height=height,
        )
    except BaseException:
        default_storage.delete(stored_name)
        raise


def upload_get(*, user: AbstractBaseUser | None, upload_id: Any) -> StoredFile:
    """The user's upload; anyone else's (or a malformed id) is a 404 and nothing is read."""
    return _file_get(user=user, file_id=upload_id, purposes=[FilePurpose.UPLOAD], what="upload")


def file_get(*, user: AbstractBaseUser | None, file_id: Any) -> StoredFile:
    return _file_get(user=user, file_id=file_id, purposes=None, what="file")


def _file_get(
    *, user: AbstractBaseUser | None, file_id: Any, purposes: list[str] | None, what: str
) -> StoredFile:
    try:
        file_uuid = file_id if isinstance(file_id, uuid.UUID) else uuid.UUID(str(file_id))
    except ValueError:
        raise NotFound(f"{str(file_id)[:80]!r} is not a {what} id: ids are UUIDs.") from None
    files = StoredFile.objects.filter(id=file_uuid)
    if purposes:
        files = files.filter(purpose__in=purposes)
    stored = None
    if user is not None and user.is_authenticated:
        stored = files.filter(owner=user).first()
    if stored is None:
        raise NotFound(f"No {what} {file_uuid} among your {what}s.", fields={what: ["not found"]})
    return stored


@dataclass(frozen=True)
class JobOwner:
    """Who a running job belongs to, and the upload its params name if it is theirs."""

    owner_id: int | None
    is_staff: bool
    upload_name: str | None  # storage name of params["upload"], if the owner's upload


def job_upload_claimed(kind: str) -> None:
    """Have the claim read of `kind`'s jobs also find the job's owner and the upload its
    params name (`upload`), ownership checked in SQL, so `job_owner` asks nothing more on
    PostgreSQL. A malformed upload id finds nothing, never a cast error."""
    jobs = Job._meta.db_table
    upload_id = lifecycle.params_uuid_sql("upload")
    lifecycle.claim_returning_add(kind, "owner_id", "owner_id")
    lifecycle.claim_returning_add(
        kind,
        "owner_is_staff",
        f"SELECT u.is_staff FROM {get_user_model()._meta.db_table} u "  # noqa: S608
        f"WHERE u.id = {jobs}.owner_id",
    )
    lifecycle.claim_returning_add(
        kind,
        "upload_name",
        f"SELECT f.storage_name FROM {StoredFile._meta.db_table} f "  # noqa: S608
        f"WHERE f.id = {upload_id} AND f.purpose = '{FilePurpose.UPLOAD}' "
        f"AND f.owner_id = {jobs}.owner_id",
    )


def job_owner(job: "JobRun") -> JobOwner:
    """The owner of a running job and its params' upload, checked again when the job runs
    (the upload must still exist and belong to the job's owner): from the claim read of a
    kind registered with `job_upload_claimed`, else from queries of its own."""
    claimed = job.claimed
    if "upload_name" in claimed:
        return JobOwner(
            claimed["owner_id"], bool(claimed["owner_is_staff"]), claimed["upload_name"]
        )
    owner_id, is_staff = Job.objects.filter(id=job.id).values_list(
        "owner_id", "owner__is_staff"
    ).first() or (None, False)
    name = None
    if job.params.get("upload") and owner_id is not None:
        name = (
            StoredFile.objects.filter(
                id=job.params["upload"], owner_id=owner_id, purpose=FilePurpose.UPLOAD
            )
            .values_list("storage_name", flat=True)
            .first()
        )
    return JobOwner(owner_id, bool(is_staff), name)


def file_url(stored: StoredFile) -> str:
    """Where the owner downloads the file (the API checks ownership)."""
    return reverse("file-content", kwargs={"file_id": stored.id})


# An output's name is fixed by what made it, and so is its row's id: a redelivered job
# rewrites the same row, and a job knows the id before the row is written.
OUTPUT_ID_NAMESPACE = uuid.UUID("5b0d3c1e-6f0a-4c41-9d36-2f0e1d7a9c84")


def output_id(name: str) -> uuid.UUID:
    return uuid.uuid5(OUTPUT_ID_NAMESPACE, name)


def output_write(
    *,
    name: str,
    content: bytes | File,
    owner_id: int | None,
    job_id: uuid.UUID,
    purpose: str,
    content_type: str,
    width: int | None = None,
    height: int | None = None,
) -> StoredFile:
    """Write a job's output under a deterministic name, replacing what an earlier delivery
    of the same job wrote there. Returns its record, not yet saved: `output_save` saves it
    at once; a job that saves its records with its final write uses `outputs_record_sql`."""
    if isinstance(content, bytes):
        size, digest = len(content), hashlib.sha256(content).hexdigest()
    else:
        _, digest = _head_and_hash(content)
        size = content.size
    output_file_write(name=name, content=content)
    now = timezone.now()
    return StoredFile(
        id=output_id(name),
        storage_name=name,
        owner_id=owner_id,
        purpose=purpose,
        content_type=content_type,
        size=size,
        sha256=digest,
        width=width,
        height=height,
        job_id=job_id,
        original_name=name.rsplit("/", 1)[-1],
        created_at=now,
        updated_at=now,
    )


def output_save(**kwargs: Any) -> StoredFile:
    """`output_write` (same arguments), then its record saved: one statement that returns
    the row as stored (on a conflict it keeps its first created_at)."""
    sql, params = outputs_record_sql([output_write(**kwargs)])
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in StoredFile._meta.concrete_fields)
    # A raw queryset converts the returned values as a read would (UUIDs and times on SQLite).
    return next(iter(StoredFile.objects.raw(f"{sql} RETURNING {columns}", params)))


def outputs_record_sql(records: list[StoredFile]) -> tuple[str, list[Any]]:
    """One statement that inserts the records, or updates the rows earlier deliveries wrote
    under the same storage names (keeping their created_at). No transaction around it and
    no read after it: recording a job's outputs costs at most one round trip, none when it
    rides with the job's final write (`JobRun.with_finish`)."""
    meta = StoredFile._meta
    quote = connection.ops.quote_name
    fields = meta.concrete_fields
    columns = ", ".join(quote(field.column) for field in fields)
    # The id is set on a conflict too: a row written before ids were derived from names
    # takes its derived id (nothing refers to a file's row by its id but URLs).
    kept = {"created_at", "storage_name"}
    sets = ", ".join(
        f"{quote(field.column)} = excluded.{quote(field.column)}"
        for field in fields
        if field.name not in kept
    )
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {', '.join([row] * len(records))} "
        f"ON CONFLICT ({quote(meta.get_field('storage_name').column)}) DO UPDATE SET {sets}"
    )
    params = [
        field.get_db_prep_save(getattr(record, field.attname), connection)
        for record in records
        for field in fields
    ]
    return sql, params


def output_file_write(*, name: str, content: bytes | File) -> None:
    """Write `name`, replacing any file of that name. On the file system the bytes go to a
    temporary file in the same folder that is then renamed over the name: a reader never
    sees a half-written output and a crash leaves no partial file under the name."""
    if isinstance(default_storage, FileSystemStorage):
        path = Path(default_storage.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(content, bytes):
                    out.write(content)
                else:
                    content.seek(0)
                    for chunk in content.chunks():
                        out.write(chunk)
            os.chmod(temporary, default_storage.file_permissions_mode or 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return
    if default_storage.exists(name):
        default_storage.delete(name)
    data = content if isinstance(content, File) else ContentFile(content)
    written = default_storage.save(name, data)
    if written != name:
        # Someone wrote the same name between our delete and save (a duplicate delivery
        # running at once); keep the deterministic name, drop the extra copy.
        default_storage.delete(written)


def files_delete(files: Iterable[StoredFile]) -> None:
    """Delete the files from storage (rows are deleted by the caller). A file already gone
    is not an error."""
    for stored in files:
        try:
            default_storage.delete(stored.storage_name)
        except OSError as exc:
            logger.warning("file %s not deleted from storage: %s", stored.storage_name, exc)


def outputs_discard(*, names: Iterable[str]) -> None:
    """Remove outputs a failed run wrote, rows and files both."""
    names = list(names)
    with transaction.atomic():
        StoredFile.objects.filter(storage_name__in=names).delete()
    for name in names:
        default_storage.delete(name)


retention_register(
    "uploads",
    model=StoredFile,
    age_field="created_at",
    days_setting="OFFLOAD_RETENTION_UPLOADS_DAYS",
    default_days=30,
    filter=Q(purpose=FilePurpose.UPLOAD),
    before_delete=files_delete,
)
retention_register(
    "job_files",
    model=StoredFile,
    age_field="updated_at",
    days_setting="OFFLOAD_RETENTION_FILES_DAYS",
    default_days=30,
    filter=~Q(purpose=FilePurpose.UPLOAD),
    before_delete=files_delete,
)
