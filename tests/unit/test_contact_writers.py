"""The contact upsert writers on the real database: counts per batch, last row wins across
batches, only the file's columns are written, and the threaded pipeline commits in order."""

import json
import random

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


def test_an_unchanged_contact_seen_again_later_is_a_duplicate_and_the_last_row_wins():
    Contact.objects.create(email="kept@x.io", first_name="Kept")
    writer = contact_writer(fields=["first_name"])
    writer.open()
    try:
        first = writer.write([row("kept@x.io", "Kept")])
        again = writer.write([row("kept@x.io", "Kept")])
        changed = writer.write([row("kept@x.io", "Changed")])
    finally:
        writer.close()

    assert (first.unchanged, first.duplicates) == (1, 0)
    assert (again.unchanged, again.duplicates) == (0, 1)
    assert (changed.updated, changed.duplicates) == (0, 1)
    assert Contact.objects.get(email="kept@x.io").first_name == "Changed"


def test_batches_after_an_all_new_one_are_copied_and_an_existing_email_falls_back():
    writer = contact_writer(fields=FIELDS)
    writer.open()
    try:
        first = writer.write([row(f"n{i}@x.io", "N") for i in range(5)])  # the upsert
        assert writer.direct  # that batch was all new: the next one is copied as is
        copied = writer.write([row(f"o{i}@x.io", "O") for i in range(5)])
        # Someone else writes one of the next batch's emails meanwhile: the direct COPY
        # meets it, rolls back whole, and the batch is upserted instead.
        Contact.objects.create(email="m2@x.io", first_name="Theirs")
        mixed = writer.write([row(f"m{i}@x.io", "M") for i in range(5)])
        assert not writer.direct
        new_again = writer.write([row(f"p{i}@x.io", "P") for i in range(5)])
        assert writer.direct
        repeated = writer.write([row("n0@x.io", "N"), row("o1@x.io", "O"), row("q@x.io", "Q")])
    finally:
        writer.close()

    assert (first.inserted, first.updated, first.duplicates) == (5, 0, 0)
    assert (copied.inserted, copied.updated, copied.duplicates) == (5, 0, 0)
    assert (mixed.inserted, mixed.updated, mixed.duplicates) == (4, 1, 0)
    assert (new_again.inserted, new_again.updated) == (5, 0)
    assert (repeated.inserted, repeated.duplicates) == (1, 2)  # both earlier paths seen
    assert Contact.objects.count() == 21
    assert Contact.objects.get(email="m2@x.io").first_name == "M"
    contact = Contact.objects.get(email="o1@x.io")
    assert contact.created_at == contact.updated_at  # the COPY statement's time, both


def test_counts_and_contents_match_a_model_of_the_rules_over_random_files():
    """Random files over a small set of emails, some stored beforehand: every batch's
    counts and the final table are what the rules say, whichever way each batch went
    (direct COPY, fallback, upsert)."""
    rng = random.Random(7)
    for _ in range(25):
        Contact.objects.all().delete()
        emails = [f"r{i}@x.io" for i in range(rng.randint(3, 30))]
        fields = [name for name in FIELDS if rng.random() < 0.6]
        stored = {}
        for email in rng.sample(emails, rng.randint(0, len(emails))):
            stored[email] = {"first_name": rng.choice("AB"), "country": rng.choice(["", "GB"])}
            stored[email]["attributes"] = rng.choice([{}, {"k": "1"}])
            Contact.objects.create(email=email, **stored[email])
        batches = [
            list({r[0]: r for r in (_random_row(rng, emails, fields) for _ in range(8))}.values())
            for _ in range(rng.randint(1, 5))
        ]
        expected = _model(stored, batches, fields)

        writer = contact_writer(fields=fields)
        writer.open()
        try:
            counts = [vars(writer.write(batch)) for batch in batches]
        finally:
            writer.close()

        assert counts == expected
        table = {
            c.email: {"first_name": c.first_name, "country": c.country, "attributes": c.attributes}
            for c in Contact.objects.all()
        }
        assert table == stored


def _random_row(rng, emails, fields):
    values = {
        "first_name": rng.choice("AB"),
        "country": rng.choice(["", "GB"]),
        "attributes": rng.choice(["{}", '{"k": "1"}', '{"k": "2"}']),
    }
    return row(
        rng.choice(emails),
        first=values["first_name"] if "first_name" in fields else "",
        country=values["country"] if "country" in fields else "",
        attributes=values["attributes"] if "attributes" in fields else "{}",
    )


def _model(stored, batches, fields):
    """The import rules, applied to `stored` in place; returns each batch's counts."""
    seen, out = set(), []
    for batch in batches:
        counts = dict.fromkeys(("inserted", "updated", "unchanged", "duplicates"), 0)
        for email, first, _, _, country, attributes in batch:
            new = {"first_name": first, "country": country, "attributes": json.loads(attributes)}
            old = stored.get(email)
            written = {
                name: (
                    {**old["attributes"], **new["attributes"]}
                    if name == "attributes"
                    else new[name]
                )
                for name in new
                if old is not None and name in fields
            }
            differs = old is None or any(old[name] != value for name, value in written.items())
            if email in seen:
                counts["duplicates"] += 1
            elif old is None:
                counts["inserted"] += 1
            else:
                counts["updated" if differs else "unchanged"] += 1
            seen.add(email)
            if old is None:
                stored[email] = new
            elif differs:
                old.update(written)
        out.append(counts)
    return out
