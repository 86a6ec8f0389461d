from tests.reportdata import contacts, jobs_of_a_day  # noqa: F401  (fixtures)
