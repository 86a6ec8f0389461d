"""Built-in job kinds of the jobs app; each module registers its kind on import."""

from jobs.kinds import cleanup, csv_import, demo, reaper, thumbnail  # noqa: F401
