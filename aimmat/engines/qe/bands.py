"""Metal or insulator, from the bands of pw.x's last SCF.

Split from ``parse`` to keep that module a reader of text; the rules here
are physics: which band count fills, per spin channel.
"""

from __future__ import annotations

METAL_GAP_EV = 0.05  # below this band gap over the k-mesh, a structure counts as metallic
FRACTIONAL_TOL = 0.02  # electrons: a spin channel's filling this far from an integer is partial


def channel_metallic(bands: list[list[float]], n_occ: float, fermi_ev: float | None) -> bool | None:
    """One channel with ``n_occ`` electrons per k-point in bands of one electron each.

    The Fermi level of a smeared semiconductor sits inside the valence-band
    tail, so "a band crosses E_F" alone is not a test; the band-count gap is:
    a fractional filling is a metal, an integer filling is a metal when the
    last filled band overlaps the first empty one. The channel's Fermi level
    only decides the case where every printed band is filled.
    """
    if not bands:
        return None
    if abs(n_occ - round(n_occ)) > FRACTIONAL_TOL:
        return True  # a partly filled band
    nocc = int(round(n_occ))
    if nocc <= 0:
        # an empty channel (fully polarised): a metal only if E_F cuts its lowest band
        return fermi_ev is not None and min(b[0] for b in bands) < fermi_ev
    if min(len(b) for b in bands) <= nocc:
        return None if fermi_ev is None else max(b[-1] for b in bands) > fermi_ev
    gap = min(b[nocc] for b in bands) - max(b[nocc - 1] for b in bands)
    return bool(gap < METAL_GAP_EV)


def metallic(out) -> bool | None:
    """Metal (True), insulator (False) or unknown (None: no bands printed).

    - fixed occupations that finished: an insulator (pw.x stops a metal with
      'charge is wrong' and prints 'highest occupied, lowest unoccupied');
    - nspin=1: n/2 electrons per band; noncollinear: one electron per band;
    - nspin=2: (n +- M)/2 electrons in the up/down channels (M the total
      magnetization); a metal if either channel has no gap at its Fermi
      level (the spin up/dw Fermi energies when pw.x printed two, else the
      common one).
    """
    if out.bands_occupied:
        return False
    if out.n_electrons is None or not out.bands_ev:
        return None
    ne = out.n_electrons
    if out.noncollinear:
        return channel_metallic(out.bands_ev, ne, out.fermi_ev)
    if not out.spin_polarized:
        return channel_metallic(out.bands_ev, ne / 2, out.fermi_ev)
    mag = out.total_magnetization or 0.0
    e_up, e_dw = out.fermi_up_dw_ev or (out.fermi_ev, out.fermi_ev)
    up = channel_metallic(out.bands_ev, (ne + mag) / 2, e_up)
    dw = channel_metallic(out.bands_dw_ev, (ne - mag) / 2, e_dw)
    if up or dw:
        return True
    return None if up is None or dw is None else False

