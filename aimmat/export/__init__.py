"""Packages made from a campaign\x27s records for people outside it (handoff)."""
