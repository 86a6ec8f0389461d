"""Schedules that never double-run: slot timing, slot claims and run leases, beat leader
election and the beat scheduler. See each module's docstring."""
