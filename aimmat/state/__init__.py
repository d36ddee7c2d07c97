"""Observed state: records in the campaign folder, atomic writes, journal, lock."""
