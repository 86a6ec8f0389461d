"""`thumbnail`: thumbnails of an uploaded image in several sizes.

Params: `upload` (an image upload id of the submitter) or, for staff, `file` (a name in the
default storage); `sizes` (box edges in pixels); `fit` (`contain`: the whole image inside
the box; `cover`: the box filled, centre-cropped to a square); `format` (JPEG, WEBP, PNG);
`quality` (JPEG and WebP; PNG is lossless).

How the image is handled:
- Only the decoders in OFFLOAD_IMAGE_DECODERS are opened, whatever the file is named.
- The pixel count is read from the header and checked against OFFLOAD_IMAGE_MAX_PIXELS
  before anything is decoded (a 50,000 x 50,000 PNG is refused, not inflated).
- JPEG is decoded with draft mode (DCT scaling): a 12 MP photo for a 256 px thumbnail is
  decoded at 1/8 scale, never in full.
- EXIF orientation is applied; EXIF, XMP and text chunks are not written (the ICC colour
  profile is kept so colours stay right); transparency is kept in PNG and WebP and
  flattened onto white for JPEG. Images are never scaled up.
- Every output is rendered in memory first, then written under a deterministic name per
  (source, size, fit, quality, format), so a redelivered job overwrites its outputs
  instead of adding copies; if a write fails, what this run wrote is removed.
"""

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from PIL import Image, ImageOps, UnidentifiedImageError
from rest_framework import serializers

from jobs import uploads
from jobs.errors import NotFound, PermissionDenied
from jobs.models import FilePurpose
from jobs.registry import job_kind
from jobs.runtime import JobRun

FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "PNG": ("png", "image/png"),
}
# The same resampling as Pillow's own Image.thumbnail(): bicubic after a fast reduce.
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 2.0
ORIENTATION = 0x0112


class ThumbnailError(Exception):
    """The source cannot be made into thumbnails (not an allowed image, corrupt, too
    large); the job fails at once."""


class ThumbnailParams(serializers.Serializer):
    upload = serializers.UUIDField(required=False, help_text="An image upload id.")
    file = serializers.CharField(
        required=False, max_length=500, help_text="Staff only: a name in the default storage."
    )
    sizes = serializers.ListField(
        child=serializers.IntegerField(min_value=16, max_value=4096),
        min_length=1,
        max_length=8,
        default=[128, 256, 512],
    )
    fit = serializers.ChoiceField(choices=["contain", "cover"], default="contain")
    format = serializers.ChoiceField(choices=list(FORMATS), default="JPEG")
    quality = serializers.IntegerField(min_value=1, max_value=100, default=85)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("format"), str):
            data = {**data, "format": data["format"].upper()}
        return super().to_internal_value(data)

    def validate_sizes(self, value: list[int]) -> list[int]:
        return sorted(set(value))

    def validate(self, attrs: dict) -> dict:
        if ("upload" in attrs) == ("file" in attrs):
            raise serializers.ValidationError("name the image: give either upload or file")
        owner = self.context.get("owner")
        if "file" in attrs:
            _stored_file_check(owner, attrs["file"])
        else:
            upload = uploads.upload_get(user=owner, upload_id=attrs["upload"])
            if not upload.content_type.startswith("image/"):
                raise serializers.ValidationError(
                    {"upload": [f"upload {upload.id} is {upload.content_type}, not an image"]}
                )
        return attrs


def _stored_file_check(owner: Any, name: str) -> None:
    if owner is None or not owner.is_staff:
        raise PermissionDenied(
            "Only staff may name a stored file; upload the image and give its upload id.",
            fields={"file": ["staff only"]},
        )
    try:
        exists = default_storage.exists(name)
    except SuspiciousFileOperation:
        exists = False
    if not exists:
        raise serializers.ValidationError({"file": [f"no stored file named {name[:200]!r}"]})


@dataclass(frozen=True)
class Source:
    name: str  # in the default storage
    key: str  # names the outputs' folder
    owner_id: int | None
    described: dict[str, str]


uploads.job_upload_claimed("thumbnail")


def _source_resolve(job: JobRun) -> Source:
    """Ownership is checked again when the job runs: the upload must still exist and
    belong to the job's owner; a stored file needs a staff owner."""
    params = job.params
    owner = uploads.job_owner(job)
    if params.get("file"):
        if not owner.is_staff:
            raise PermissionDenied("Only staff may make thumbnails of a stored file.")
        name = params["file"]
        key = "stored-" + hashlib.sha256(name.encode()).hexdigest()[:24]
        return Source(name, key, owner.owner_id, {"file": name})
    if owner.upload_name is None:
        raise NotFound(f"Upload {params['upload']} is gone or is not the job owner's.")
    return Source(owner.upload_name, params["upload"], owner.owner_id, {"upload": params["upload"]})


def image_load(fp: Any, *, box: int) -> tuple[Image.Image, tuple[int, int]]:
    """Open with the allowed decoders only, refuse over-large images from their header,
    decode (JPEG at the smallest DCT scale that still covers `box`), apply EXIF
    orientation. Returns the image and the source's full size (as oriented)."""
    try:
        image = uploads.image_open(fp)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        allowed = ", ".join(settings.OFFLOAD_IMAGE_DECODERS)
        raise ThumbnailError(f"The file is not an image this service opens ({allowed}).") from exc
    width, height = image.size
    if image.getexif().get(ORIENTATION) in (5, 6, 7, 8):
        width, height = height, width
    if image.format == "JPEG":
        image.draft(None, (box, box))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ThumbnailError(
            f"The {image.format} image data cannot be decoded ({exc}); the file is truncated "
            "or damaged. Upload it again."
        ) from exc
    ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
    return image, (width, height)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def image_prepare(image: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode the output format can hold: alpha kept where possible."""
    try:
        if _has_alpha(image):
            return image if image.mode == "RGBA" else image.convert("RGBA")
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    except ValueError as exc:
        raise ThumbnailError(f"Images in mode {image.mode} cannot be converted ({exc}).") from exc


def _geometry(
    width: int, height: int, size: int, fit: str
) -> tuple[tuple[int, int], tuple[float, float, float, float] | None]:
    if fit == "contain":
        scale = min(size / width, size / height, 1.0)
        return (max(1, round(width * scale)), max(1, round(height * scale))), None
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    out = min(size, side)
    return (out, out), (left, top, left + side, top + side)


def thumbnail_render(
    image: Image.Image, *, size: int, fit: str, fmt: str, quality: int
) -> tuple[bytes, tuple[int, int]]:
    target, box = _geometry(image.width, image.height, size, fit)
    if box is None and target == image.size:
        out = image
    else:
        out = image.resize(target, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    if fmt == "JPEG" and out.mode == "RGBA":
        flat = Image.new("RGB", out.size, (255, 255, 255))
        flat.paste(out, mask=out.getchannel("A"))
        out = flat
    options: dict[str, Any] = {"JPEG": {"quality": quality}, "WEBP": {"quality": quality}}.get(
        fmt, {}
    )
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    buffer = io.BytesIO()
    out.save(buffer, format=fmt, **options)
    return buffer.getvalue(), out.size


def thumbnails_make(
    *, job: JobRun, source: Source, sizes: list[int], fit: str, fmt: str, quality: int
) -> dict[str, Any]:
    """Decode the source once, render every size in memory, then write them all. Their
    records are saved with the job's final write, in the same transaction."""
    with default_storage.open(source.name, "rb") as fp:
        image, source_size = image_load(fp, box=max(sizes))
    image = image_prepare(image, fmt)
    rendered = [
        (size, *thumbnail_render(image, size=size, fit=fit, fmt=fmt, quality=quality))
        for size in sizes
    ]
    extension, content_type = FORMATS[fmt]
    written: list[str] = []
    records = []
    try:
        for size, data, (width, height) in rendered:
            name = f"thumbnails/{source.key}/{size}-{fit}-q{quality}.{extension}"
            written.append(name)
            records.append(
                uploads.output_write(
                    name=name,
                    content=data,
                    owner_id=source.owner_id,
                    job_id=job.id,
                    purpose=FilePurpose.THUMBNAIL,
                    content_type=content_type,
                    width=width,
                    height=height,
                )
            )
    except BaseException:
        uploads.outputs_discard(names=written)
        raise
    job.with_finish(*uploads.outputs_record_sql(records))
    outputs = [
        {
            "size": size,
            "url": uploads.file_url(record),
            "file": str(record.id),
            "bytes": record.size,
            "width": record.width,
            "height": record.height,
            "content_type": content_type,
        }
        for size, record in zip(sizes, records, strict=True)
    ]
    return {
        "source": {**source.described, "width": source_size[0], "height": source_size[1]},
        "fit": fit,
        "format": fmt,
        "outputs": outputs,
    }


@job_kind(
    "thumbnail",
    params=ThumbnailParams,
    queue="bulk",
    priority=3,
    soft_time_limit=120,
    time_limit=150,
)
def thumbnail(job: JobRun) -> dict:
    """Thumbnails of an uploaded JPEG, PNG or WebP image in several sizes."""
    params = job.params
    return thumbnails_make(
        job=job,
        source=_source_resolve(job),
        sizes=params["sizes"],
        fit=params["fit"],
        fmt=params["format"],
        quality=params["quality"],
    )
