"""PostgreSQL connection settings from the environment (config/settings/base.py)."""

from config.settings.base import postgres_options


def test_default_keeps_connections_open_and_checks_them(monkeypatch):
    monkeypatch.delenv("DATABASE_POOL_MAX_SIZE", raising=False)
    monkeypatch.delenv("DATABASE_CONN_MAX_AGE", raising=False)

    db = postgres_options({"NAME": "offload"})

    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (60, True)
    assert "pool" not in db.get("OPTIONS", {})


def test_pool_replaces_persistent_connections(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "4")
    monkeypatch.setenv("DATABASE_POOL_MIN_SIZE", "2")

    db = postgres_options({"NAME": "offload"})

    # Django refuses a pool together with persistent connections or health checks.
    assert (db["CONN_MAX_AGE"], db["CONN_HEALTH_CHECKS"]) == (0, False)
    assert db["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 4, "timeout": 5.0}
