"""Scoped, hashed rendering of evidence into manuscript tables."""
