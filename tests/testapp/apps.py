from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """Kinds that exist only in tests (short time limits, crash modes); installed by the
    test settings, so test workers load them too."""

    name = "tests.testapp"
    label = "offload_testapp"
