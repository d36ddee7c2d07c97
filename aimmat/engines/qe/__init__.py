"""Quantum ESPRESSO pw.x engine: write inputs, execute, read results, remedy (taxonomy)."""
