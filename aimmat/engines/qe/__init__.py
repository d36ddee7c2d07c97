"""Quantum ESPRESSO pw.x engine: inputs, run, parse, taxonomy."""
