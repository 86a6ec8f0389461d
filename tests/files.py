"""Test files made on the fly: photos with EXIF, transparent PNGs, a decompression bomb,
truncated JPEGs, contacts CSVs."""

import io
import struct
import zlib

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image


def jpeg_bytes(width: int = 1200, height: int = 800, *, orientation: int | None = None) -> bytes:
    """A photo-like JPEG (a gradient, so it does not compress to nothing), with EXIF."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image.paste((200, 30, 30), (0, 0, width // 4, height // 4))  # a red top-left corner
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude: must not survive
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def png_transparent(width: int = 400, height: int = 300) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((0, 120, 255, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A real 1-bit PNG of width x height black pixels: a few hundred KB that inflate to
    hundreds of MB (and to gigabytes as RGB)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(1600, 1200)
    return data[: len(data) // 2]


PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n"


def upload_file(name: str, content: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def contacts_csv(rows: int, *, start: int = 0, header: str | None = None) -> bytes:
    lines = [header or "email,first_name,last_name,phone,country,plan"]
    lines += [
        f"person{i}@example.com,First{i},Last{i},+44 20 7946 {i % 10000:04d},GB,plan{i % 3}"
        for i in range(start, start + rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(api, name: str, content: bytes, content_type: str = "application/octet-stream"):
    """POST a file to the uploads API and return the response."""
    return api.post(
        "/api/v1/uploads", {"file": upload_file(name, content, content_type)}, format="multipart"
    )
