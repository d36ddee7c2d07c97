"""The element palette: derived from the QE profiles' pseudopotential
folders or declared; the generator samples within it; a file candidate
outside it is screened out (no_pseudopotential) instead of stopping the
campaign."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from pymatgen.core import Lattice, Structure

from aimmat.errors import ManifestError
from aimmat.manifest import load_manifest
from aimmat.model.sample import sample
from aimmat.model.vae import CrystalVAE
from aimmat.resolve.palette import campaign_palette
from tests.model.tiny import VAE_HP, write_tiny_checkpoint

needs_pw = pytest.mark.skipif(shutil.which("pw.x") is None, reason="pw.x not installed")
SCREEN = {"min_distance_a": 0.5, "density_min_g_cm3": 0.0, "density_max_g_cm3": 30.0, "charge_neutral": False}


def _qe_manifest(tmp, *, functional="pbe", palette=None, sets=None, stages=("screen", "relax"), models=None):
    m = {
        "campaign": {"name": "p", "root": "camp"},
        "profiles": {"qe": {"kind": "qe", "preset": "fast", "ecutwfc_ry": 20, "kpoints": [1, 1, 1],
                            "pseudo": {"family": "debian", "functional": functional}}},
        "candidate_sets": sets or [{"name": "2-element", "elements": 2,
                                    "source": {"kind": "files", "glob": "structures/*.cif"}}],
        "stages": {s: (SCREEN if s == "screen" else {"profile": "qe"}) for s in stages},
    }
    if palette is not None:
        m["campaign"]["palette"] = palette
    if models:
        m["models"] = models
    if not (tmp / "structures").exists():
        _write_cifs(tmp, {"SiO": _rocksalt("Si", "O")})
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return path


def _write_cifs(tmp, structures: dict[str, Structure]):
    (tmp / "structures").mkdir(exist_ok=True)  # noqa
    for name, s in structures.items():
        s.to(filename=str(tmp / "structures" / f"{name}.cif"))


def _rocksalt(a: str, b: str, lat: float = 4.2) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_palette_derived_from_the_family_and_functional(tmp_path):
    pbe = campaign_palette(load_manifest(_qe_manifest(tmp_path)))
    lda = campaign_palette(load_manifest(_qe_manifest(tmp_path, functional="lda")))
    # Debian's folder: Al only as an LDA (pz) file, Nd not at all
    assert "Si" in pbe.elements and "O" in pbe.elements and "Al" not in pbe.elements and "Nd" not in pbe.elements
    assert "Al" in lda.elements and "Mg" in lda.elements
    assert pbe.by_profile == {"qe": pbe.elements}


def test_declared_palette_must_be_covered(tmp_path):
    ok = campaign_palette(load_manifest(_qe_manifest(tmp_path, palette=["Si", "O"])))
    assert ok.elements == {"Si", "O"} and ok.declared
    with pytest.raises(ManifestError, match="no pseudopotential for Nd in profile qe"):
        campaign_palette(load_manifest(_qe_manifest(tmp_path, palette=["Si", "Nd"])))


def test_palette_is_unrestricted_without_qe(tmp_path):
    from tests.helpers import emt_manifest, make_emt_campaign

    assert campaign_palette(load_manifest(make_emt_campaign(tmp_path, emt_manifest()))).elements is None


def test_palette_symbols_are_validated(tmp_path, cli):
    code, out, err = cli("diff", _qe_manifest(tmp_path, palette=["Si", "Xx"]))
    assert code == 3 and "campaign.palette" in err and "Xx" in err


def test_generator_samples_only_within_the_palette():
    torch.manual_seed(4)
    vae = CrystalVAE(**VAE_HP).eval()
    fast = {"levels": 2, "steps": 1, "step_lr": 1e-4, "min_separation": 0.0}
    free = sample(vae, 16, 2, seed=0, schedule=fast)
    pal = [6, 8, 14]  # C, O, Si
    inside = sample(vae, 16, 2, seed=0, schedule=fast, palette=pal)
    assert len(inside) == 16  # conditioned, not filtered: the count is kept
    used = {sp.Z for s in inside for sp in s.structure.composition.elements}
    assert used <= set(pal) and all(len(s.structure.composition.elements) == 2 for s in inside)
    # the unrestricted model does use other elements: the palette changed something
    assert {sp.Z for s in free for sp in s.structure.composition.elements} - set(pal)
    with pytest.raises(ValueError, match="palette has 1 element"):
        sample(vae, 1, 2, seed=0, schedule=fast, palette=[6])


@needs_pw
def test_file_candidate_outside_the_palette_is_screened_out(tmp_path, cli):
    _write_cifs(tmp_path, {"SiO": _rocksalt("Si", "O"), "NdO": _rocksalt("Nd", "O", 5.0)})
    m = _qe_manifest(tmp_path, stages=("screen",))  # screen only: no pw.x run, the palette still comes from qe
    m_data = yaml.safe_load(m.read_text())
    m_data["stages"]["relax"] = {"profile": "qe"}
    m.write_text(yaml.safe_dump(m_data))
    code, out, err = cli("diff", m)
    assert code == 0, err  # never a campaign-wide exit for one uncovered element
    assert out.startswith("palette (derived; qe covers")
    code, out, err = cli("apply", m, "--jobs", "1", "--target", "2-element/NdO")
    assert code == 0, err
    rec = json.loads((tmp_path / "camp/p/2-element/NdO/screen/record.json").read_text())
    crit = rec["outputs"]["criteria"]["pseudopotentials"]
    assert crit["pass"] is False and crit["value"] == ["Nd"] and rec["outputs"]["strict_pass"] is False
    assert not (tmp_path / "camp/p/2-element/NdO/relax").exists()
    code, out, err = cli("status", m, "-v")
    assert "no_pseudopotential: Nd" in out
    code, out, err = cli("diff", m)
    assert "no_pseudopotential: Nd" in out and "NdO" in out


def test_generated_candidates_stay_in_the_palette_end_to_end(tmp_path, cli):
    sha = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)
    sets = [{"name": "gen-2", "elements": 2, "source": {"kind": "generator", "model": "tiny", "count": 4, "seed": 3}}]
    m = _qe_manifest(tmp_path, palette=["C", "O", "Si"], sets=sets, stages=("screen",),
                     models={"tiny": {"path": "tiny.pt", "sha256": sha}})
    code, out, err = cli("apply", m, "--jobs", "1")
    assert code == 0, err
    for cand in (tmp_path / "camp/p/gen-2").glob("*/candidate.json"):
        data = json.loads(cand.read_text())
        assert set(Structure.from_dict(data["structure"]).symbol_set) <= {"C", "O", "Si"}
    # the palette is part of what a generated candidate depends on: widening it regenerates
    m2 = _qe_manifest(tmp_path, palette=["C", "O", "Si", "N"], sets=sets, stages=("screen",),
                      models={"tiny": {"path": "tiny.pt", "sha256": sha}})
    code, out, err = cli("diff", m2)
    assert "palette" in out and "rerun" in out


def test_without_a_screen_evidence_counts_an_uncovered_candidate_as_screened_out(tmp_path, cli):
    """No screen record says so: status and the evidence snapshot both read the
    palette, so the candidate is screened_out in both, never pending."""
    _write_cifs(tmp_path, {"SiO": _rocksalt("Si", "O"), "NdO": _rocksalt("Nd", "O", 5.0)})
    m = _qe_manifest(tmp_path, stages=("relax",))
    code, out, err = cli("apply", m, "--jobs", "1", "--target", "2-element/NdO")
    assert code == 0, err
    assert not (tmp_path / "camp/p/2-element/NdO/relax").exists()
    code, out, err = cli("status", m, "--json")
    st = json.loads(out)["sets"]["2-element"]
    assert st["screened_out"] == 1
    code, out, err = cli("evidence", m)
    assert code == 0, err
    snap = json.loads(out)["scopes"]["screening"]
    assert snap["sets"]["2-element"]["status"]["screened_out"] == st["screened_out"] == 1
    assert "Nd" not in snap["palette_for_status"] and "Si" in snap["palette_for_status"]
