"""Elastic analysis: strain sets, symmetry-constrained fit, gates, moduli. Pure numpy/pymatgen."""

from aimmat.elastic.fit import fit_elastic, strain_set

__all__ = ["fit_elastic", "strain_set"]
