"""Pure functions of the data kinds: content sniffing, draft decoding, the CSV pre-check
and header mapping. No worker, no database."""

import io

import pytest

from jobs.kinds.thumbnail import image_load
from jobs.uploads import content_sniff
from notifications.contact_csv import CsvImportError, csv_precheck, header_map
from tests.files import HTML, PDF, jpeg_bytes, png_transparent


@pytest.mark.parametrize(
    ("head", "content_type", "category"),
    [
        (jpeg_bytes(64, 64)[:4096], "image/jpeg", "image"),
        (png_transparent(64, 64)[:4096], "image/png", "image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp", "image"),
        (b"\xef\xbb\xbfemail,name\na@b.co,\xc3\xa9\n", "text/csv", "csv"),
        (b"email,name\na@b.co,caf\xc3", "text/csv", "csv"),  # cut inside a character
        (PDF, "application/pdf", ""),
        (HTML, "text/html", ""),
        (b"  <svg xmlns='x'></svg>", "text/html", ""),
        (b"GIF89a....", "image/gif", ""),
        (b"email\n\x00\x01\x02", "application/octet-stream", ""),
        (b"email,name\nx@y.z,Andr\xe9\n", "text/plain; charset=unknown", ""),
    ],
)
def test_content_sniffing(head, content_type, category):
    found = content_sniff(head)
    assert (found.content_type, found.category) == (content_type, category)


@pytest.mark.parametrize(("box", "decoded"), [(256, (500, 375)), (512, (1000, 750))])
def test_a_12_megapixel_jpeg_is_draft_decoded_at_a_fraction_of_its_size(box, decoded):
    image, source = image_load(io.BytesIO(jpeg_bytes(4000, 3000)), box=box)

    assert source == (4000, 3000)
    assert image.size == decoded  # DCT scaling: never the full 12 MP


def test_precheck_counts_lines_of_a_good_file():
    data = "\ufeffemail,name\n" + "".join(f"p{i}@x.io,Zoë\n" for i in range(1000))
    assert csv_precheck(io.BytesIO(data.encode()), max_line=1000) == 1001
    assert csv_precheck(io.BytesIO(b"email\na@b.co"), max_line=100) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"email\na@b.co\nc@d.co,Andr\xe9\ne@f.co\n", "Line 3 is not valid UTF-8"),
        (b"email\na@b.co\nc@d.co\x00\n", "Line 3 contains a NUL byte"),
        (b"email\na@b.co\n" + b"x" * 5000 + b"\nc@d.co\n", "Line 3 is longer than 1000 bytes"),
    ],
)
def test_precheck_refuses_with_the_line_number(data, message):
    # Small reads so the problems sit across chunk boundaries too.
    with pytest.raises(CsvImportError, match=message):
        csv_precheck(io.BytesIO(data), max_line=1000)


def test_invalid_utf8_deep_in_a_large_file_names_its_line():
    data = b"email\n" + b"a@b.co\n" * 300_000 + b"\xff\xfe@b.co\n" + b"a@b.co\n" * 10
    with pytest.raises(CsvImportError, match="Line 300002 is not valid UTF-8"):
        csv_precheck(io.BytesIO(data), max_line=64 * 1024)


def test_headers_map_case_insensitively_and_extras_go_to_attributes():
    mapping = header_map(
        ["E-Mail", "First Name", "SURNAME", "Courriel pro", "Plan", ""],
        column_map={"courriel pro": "ignore", "PLAN": "attributes"},
        required=["email"],
    )
    assert mapping.email == 0
    assert mapping.others == [("first_name", 1), ("last_name", 2)]
    assert mapping.attributes == [("Plan", 4), ("column_6", 5)]


def test_missing_required_header_lists_what_was_expected():
    with pytest.raises(CsvImportError) as caught:
        header_map(["name", "mail"], column_map={}, required=["email", "country"])
    message = str(caught.value)
    assert "no column for email, country" in message
    assert "email (required), first_name, last_name, phone, country (required)" in message
    assert "'name', 'mail'" in message


def test_two_columns_for_one_field_are_refused():
    with pytest.raises(CsvImportError, match="both map to email"):
        header_map(["email", "E-mail"], column_map={}, required=["email"])
