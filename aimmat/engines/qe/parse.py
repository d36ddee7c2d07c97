"""Read pw.x output text. Written against the strings of pw.x 6.x/7.x.

ASE's reader gives energies, forces and stresses of finished runs but raises
on truncated or unconverged output (AssertionError, IndexError), so the
convergence markers and the last structure are read here from the raw text,
and ASE is used only for complete images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from aimmat.engines.qe.bands import METAL_GAP_EV, metallic as _metallic  # noqa: F401 (re-exported)

RY_EV = 13.605693122994
BOHR_A = 0.529177210903
RY_PER_BOHR3_GPA = 14710.507848260711  # 1 Ry/bohr^3 in GPa

DIAG_MARKERS = (
    "S matrix not positive definite",
    "problems computing cholesky",
    "too many bands are not converged",
    "eigenvectors failed to converge",
    "zhegvd failed",
    "[Q, R] = qr(X, 0) failed",
    "cdiaghg",
    "rdiaghg",
)
# LAPACK/MPI aborts inside the subspace diagonalization: xerbla prints these on
# stderr (often with no pw.x error block at all) before MPI_ABORT
LAPACK_RE = re.compile(r"On entry to [CZSD](?:HEGV|HEEV|SYGV|SYEV|POTRF)\w*|parameter number \d+ had an illegal value|[cr]diaghg|[CZ]HEGVX?")
CELL_FACTOR_MARKER = "Not enough space allocated for radial FFT"


@dataclass
class PwOutput:
    text: str
    version: str | None = None
    job_done: bool = False
    energies_ry: list[float] = field(default_factory=list)
    stresses_gpa: list[np.ndarray] = field(default_factory=list)  # tensile positive
    forces_ev_per_a: list[np.ndarray] = field(default_factory=list)
    scf_converged: list[bool] = field(default_factory=list)  # one per SCF cycle, in order
    walltime_hit: bool = False
    ionic_converged: bool = False
    bfgs_history_reset_stop: bool = False
    nstep_reached: bool = False
    final_scf_started: bool = False
    charge_wrong: bool = False
    diagonalization_error: str | None = None
    error_block: str | None = None
    memory_mb: float | None = None
    wall_s: float | None = None
    total_magnetization: float | None = None
    cell_a: np.ndarray | None = None  # last cell, A (rows are vectors)
    positions_frac: np.ndarray | None = None  # last positions, crystal coordinates
    species: list[str] | None = None
    bands_occupied: bool | None = None  # fixed occupations printed HOMO/LUMO
    fermi_ev: float | None = None
    bands_ev: list[list[float]] = field(default_factory=list)  # last SCF: eigenvalues per k-point

    n_electrons: float | None = None
    spin_polarized: bool = False
    noncollinear: bool = False
    fermi_up_dw_ev: tuple[float, float] | None = None  # two Fermi levels (fixed tot_magnetization)
    bands_dw_ev: list[list[float]] = field(default_factory=list)  # last SCF, spin down (nspin=2)
    pressures_kbar: list[float] = field(default_factory=list)  # one per printed stress, in order
    pressure_before_final_scf_kbar: float | None = None  # the last one of the ionic minimisation
    cell_factor_error: bool = False  # scale_h: the cell left the G-vector table (vc-relax)
    cell_a_initial: np.ndarray | None = None  # the input cell as pw.x read it (A)
    restart_written: bool = False  # pw.x wrote its save folder ('Writing output data file')

    @property
    def metallic(self) -> bool | None:
        """No gap at the Fermi level over the k-mesh, in any spin channel.

        None only when pw.x printed no bands (an output written without
        ``verbosity='high'`` and >= 100 k-points, or no finished SCF).
        See ``aimmat.engines.qe.bands.metallic`` for the rules.
        """
        return _metallic(self)

    @property
    def last_energy_ev(self) -> float | None:
        return self.energies_ry[-1] * RY_EV if self.energies_ry else None


def _floats(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:[EeDd][-+]?\d+)?", line.replace("D", "E"))]


def _time_s(token: str) -> float:
    """pw.x times: '12.3s', '1m23.45s', '1h 2m'."""
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)\s*([hms])", token):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def parse_pw_output(text: str) -> PwOutput:
    out = PwOutput(text)
    lines = text.splitlines()
    alat_a = None
    spin_down = False
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        s = line.strip()
        if "Program PWSCF v." in line:
            m = re.search(r"Program PWSCF v\.(\S+)", line)
            out.version = m.group(1) if m else None
        elif "lattice parameter (alat)" in line:
            alat_a = _floats(line)[0] * BOHR_A
        elif s.startswith("a(1) = (") and alat_a and out.cell_a_initial is None and i + 2 < n:
            rows = [_floats(lines[i + k])[:3] for k in (0, 1, 2)]
            if all(len(r) == 3 for r in rows):
                out.cell_a_initial = np.array(rows) * alat_a
        elif "Noncollinear calculation" in line:
            out.noncollinear = True
        elif "Writing output data file" in line:
            out.restart_written = True
        elif s.startswith("!") and "total energy" in s:
            out.energies_ry.append(_floats(s)[0])
        elif "convergence has been achieved in" in line:
            out.scf_converged.append(True)
        elif "convergence NOT achieved after" in line:
            out.scf_converged.append(False)
        elif "total   stress" in line and i + 3 < n:
            rows = [_floats(lines[i + k]) for k in (1, 2, 3)]
            p = re.search(r"P=\s*(-?\d+\.\d+)", line)
            out.pressures_kbar.append(float(p.group(1)) if p else float("nan"))
            if all(len(r) >= 6 for r in rows):
                out.stresses_gpa.append(-np.array([r[:3] for r in rows]) * RY_PER_BOHR3_GPA)
            else:  # '*******' overflow in a Fortran field
                out.stresses_gpa.append(np.full((3, 3), np.nan))
            i += 3
        elif "Forces acting on atoms" in line:
            forces = []
            j = i + 1
            while j < n and (not lines[j].strip() or "atom" in lines[j] and "force =" in lines[j]):
                if "force =" in lines[j]:
                    f = _floats(lines[j].split("force =")[1])[:3]
                    forces.append(f if len(f) == 3 else [float("nan")] * 3)  # '*****': Fortran overflow
                j += 1
            if forces:
                out.forces_ev_per_a.append(np.array(forces) * RY_EV / BOHR_A)
            i = j - 1
        elif "Maximum CPU time exceeded" in line:
            out.walltime_hit = True
        elif ("bfgs converged in" in line or "Damped Dynamics: convergence achieved" in line
              or "convergence achieved, Efinal=" in line or "FIRE: convergence achieved in" in line):
            # BFGS; damped ionic dynamics; damped (Wentzcovitch) cell dynamics; FIRE (pw.x 7.x)
            out.ionic_converged = True
        elif "history already reset at previous step: stopping" in line or "bfgs failed after" in line:
            out.bfgs_history_reset_stop = True
        elif "The maximum number of steps has been reached" in line or "Maximum number of iterations reached" in line:
            out.nstep_reached = True
        elif "final scf calculation at the relaxed structure" in line.lower():
            out.final_scf_started = True
            out.pressure_before_final_scf_kbar = out.pressures_kbar[-1] if out.pressures_kbar else None
        elif "charge is wrong" in line:
            out.charge_wrong = True
        elif "Estimated max dynamical RAM per process" in line or "Estimated total dynamical RAM" in line:
            m = re.search(r">\s*([\d.]+)\s*(MB|GB|Mb)", line)
            if m:
                mb = float(m.group(1)) * (1024 if m.group(2) == "GB" else 1)
                out.memory_mb = max(out.memory_mb or 0.0, mb)
        elif s.startswith("PWSCF") and "WALL" in s:
            out.wall_s = _time_s(s.split("CPU")[1])
        elif "total magnetization" in line and "Bohr mag/cell" in line:
            out.total_magnetization = _floats(line)[0]
        elif "highest occupied" in line and "level" in line:
            out.bands_occupied = True
        elif "number of electrons" in line and "=" in line:
            out.n_electrons = _floats(line)[0]
        elif "spin up/dw Fermi" in line:
            out.spin_polarized = True
            up_dw = _floats(line)[:2]
            out.fermi_up_dw_ev = (up_dw[0], up_dw[1]) if len(up_dw) == 2 else None
        elif "SPIN UP" in line:
            out.spin_polarized = True
        elif "SPIN DOWN" in line:
            spin_down = True  # pw.x prints all spin-up k-points, then all spin-down ones
        elif "the Fermi energy is" in line:
            out.fermi_ev = _floats(line)[0]
        elif "End of self-consistent calculation" in line or "End of band structure calculation" in line:
            out.bands_ev, out.bands_dw_ev, out.fermi_ev, out.fermi_up_dw_ev = [], [], None, None
            spin_down = False
        elif s.startswith("k =") and "bands (ev)" in line:
            vals: list[float] = []
            j = i + 1
            while j < n and not lines[j].strip():
                j += 1
            while j < n and lines[j].strip() and re.match(r"^\s*-?\d", lines[j]):
                vals.extend(float(x) for x in re.findall(r"-?\d+\.\d+", lines[j]))
                j += 1
            (out.bands_dw_ev if spin_down else out.bands_ev).append(vals)
            i = j - 1
        elif s.startswith("%%%%%%%%") and i + 1 < n and "Error in routine" in lines[i + 1]:
            j = i + 1
            block = []
            while j < n and not lines[j].strip().startswith("%%%%"):
                block.append(lines[j].strip())
                j += 1
            out.error_block = " ".join(b for b in block if b)
            out.charge_wrong = out.charge_wrong or "charge is wrong" in out.error_block
            out.cell_factor_error = CELL_FACTOR_MARKER in out.error_block
            for marker in DIAG_MARKERS:
                if marker in out.error_block:
                    out.diagonalization_error = marker
            i = j
        elif s.startswith("CELL_PARAMETERS"):
            rows = [_floats(lines[i + k])[:3] for k in (1, 2, 3)]
            cell = np.array(rows)
            if "alat" in s:
                m = re.search(r"alat\s*=\s*([\d.]+)", s)
                scale = float(m.group(1)) * BOHR_A if m else alat_a
                cell = cell * scale
            elif "bohr" in s:
                cell = cell * BOHR_A
            out.cell_a = cell
            i += 3
        elif s.startswith("ATOMIC_POSITIONS"):
            pos, spec = [], []
            j = i + 1
            while j < n and len(lines[j].split()) >= 4 and re.match(r"^\s*[A-Z][a-z]?\w*\s+-?\d", lines[j]):
                parts = lines[j].split()
                spec.append(parts[0])
                pos.append([float(x) for x in parts[1:4]])
                j += 1
            out.positions_frac, out.species = _fractional(np.array(pos), s, out, alat_a), spec
            i = j - 1
        elif "JOB DONE" in line:
            out.job_done = True
        else:
            for marker in DIAG_MARKERS[:6]:  # outside an error block only the explicit messages
                if marker in line:
                    out.diagonalization_error = marker
        i += 1
    return out


def _fractional(pos: np.ndarray, header: str, out: PwOutput, alat_a: float | None) -> np.ndarray | None:
    """Positions printed as ``ATOMIC_POSITIONS (unit)`` in crystal coordinates.

    bohr/angstrom/alat are Cartesian: they are converted with the cell pw.x
    had at that point (the last printed CELL_PARAMETERS, else the input cell
    from the header), because a restart needs fractional coordinates in the
    cell it restarts from. None when the cell is unknown.
    """
    unit = header.lower()
    if "crystal" in unit or not len(pos):
        return pos
    cell = out.cell_a if out.cell_a is not None else out.cell_a_initial
    if cell is None:
        return None
    if "bohr" in unit:
        cart = pos * BOHR_A
    elif "angstrom" in unit:
        cart = pos
    else:  # alat: pw.x keeps the input alat through a vc-relax
        m = re.search(r"alat\s*=\s*([\d.]+)", header)
        scale = float(m.group(1)) * BOHR_A if m else alat_a
        if scale is None:
            return None
        cart = pos * scale
    return cart @ np.linalg.inv(cell)
