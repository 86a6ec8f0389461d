"""The contact upsert writers on the real database: counts per batch, last row wins across
batches, only the file's columns are written, and the threaded pipeline commits in order."""

import pytest

from notifications.contact_writers import WritePipeline, contact_writer
from notifications.models import Contact

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ["first_name", "last_name", "phone", "country", "attributes"]


def row(email, first="", last="", phone="", country="", attributes="{}"):
    return (email, first, last, phone, country, attributes)


def test_counts_and_duplicates_across_batches():
    Contact.objects.create(email="old@x.io", first_name="Old", phone="1", attributes={"k": "v"})
    writer = contact_writer(fields=["first_name", "attributes"])
    writer.open()
    try:
        first = writer.write([row("a@x.io", "A"), row("old@x.io", "New", attributes='{"p": "1"}')])
        second = writer.write([row("a@x.io", "A2"), row("b@x.io", "B")])
        third = writer.write([row("b@x.io", "B"), row("old@x.io", "New", attributes='{"p": "1"}')])
    finally:
        writer.close()

    assert (first.inserted, first.updated, first.unchanged, first.duplicates) == (1, 1, 0, 0)
    assert (second.inserted, second.updated, second.unchanged, second.duplicates) == (1, 0, 0, 1)
    assert (third.inserted, third.updated, third.unchanged, third.duplicates) == (0, 0, 0, 2)
    assert Contact.objects.get(email="a@x.io").first_name == "A2"  # the last row won
    old = Contact.objects.get(email="old@x.io")
    assert old.phone == "1"  # not a column of the file: left alone
    assert old.attributes == {"k": "v", "p": "1"}


def test_the_pipeline_writes_every_batch_in_order_on_its_own_connection():
    batches = [[row(f"p{i}@x.io", f"n{b}") for i in range(100)] for b in range(5)]

    with WritePipeline(fields=FIELDS) as pipeline:
        done = []
        for number, batch in enumerate(batches):
            done += pipeline.submit(batch, number)
        done += pipeline.finish()

    assert [mark for _, mark in done] == [0, 1, 2, 3, 4]
    assert [counts.inserted for counts, _ in done] == [100, 0, 0, 0, 0]
    assert [counts.duplicates for counts, _ in done] == [0, 100, 100, 100, 100]
    assert set(Contact.objects.values_list("first_name", flat=True)) == {"n4"}


def test_a_database_error_in_the_writer_reaches_the_caller():
    too_long = row("x@x.io", first="N" * 200)  # over the column's 150 characters

    def write() -> None:
        with WritePipeline(fields=FIELDS) as pipeline:
            pipeline.submit([too_long], 0)
            pipeline.finish()

    with pytest.raises(Exception, match="too long"):
        write()
    assert not Contact.objects.exists()


def test_values_with_tabs_backslashes_and_newlines_survive_copy():
    value = 'a\tb\\c\nd\re "q"'
    with WritePipeline(fields=FIELDS) as pipeline:
        pipeline.submit([row("t@x.io", first=value, attributes='{"k": "\\\\ \\t"}')], 0)
        pipeline.finish()

    contact = Contact.objects.get(email="t@x.io")
    assert contact.first_name == value
    assert contact.attributes == {"k": "\\ \t"}
