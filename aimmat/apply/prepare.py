"""Checks and inputs that need the file system but must run before anything
is written: new or changed source structures are parsed here, so a bad
structure file stops diff and apply with exit 3 and an untouched folder."""

from __future__ import annotations

from aimmat.errors import ManifestError
from aimmat.manifest.identity import structure_sha256
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.sources import GeneratedSource, read_structure
from aimmat.plan.keys import engine_version, import_inputs, import_key, qe_cutoffs, qe_pseudo_files, stage_key
from aimmat.state.records import CandidateRecord, record_elements
from aimmat.state.scan import Observed


def check_environment(spec: CampaignSpec) -> None:
    """Programs the enabled stages need (exit 5 when missing)."""
    kinds = {spec.manifest.profiles[getattr(spec.manifest.stages, st).profile].kind for st in spec.stages if st != "screen"}
    if "qe" in kinds:
        engine_version("qe")


def _qe_profiles(spec: CampaignSpec) -> list[str]:
    names = {getattr(spec.manifest.stages, st).profile for st in spec.stages if st != "screen"}
    return sorted(n for n in names if spec.manifest.profiles[n].kind == "qe")


def new_candidates(spec: CampaignSpec, observed: Observed, generate: bool = True) -> dict[tuple[str, str], CandidateRecord]:
    """CandidateRecords for every candidate whose import is pending; checks
    that every element of every candidate has a pseudopotential in each QE
    profile (exit 3 naming element and folder) before anything runs.

    ``generate=False`` (diff) skips generator candidates: their checkpoint
    was already checked against its pinned sha256 when the manifest loaded.
    """
    check_environment(spec)
    qe = _qe_profiles(spec)
    elements = {s.name: s for s in spec.manifest.candidate_sets}
    out: dict[tuple[str, str], CandidateRecord] = {}
    pending_gen = [s for s in spec.candidates if isinstance(s, GeneratedSource) and not _imported(spec, s, observed)]
    if pending_gen and generate:
        from aimmat.model.rank import pregenerate

        pregenerate(spec, pending_gen)
    checked: set[tuple[str, ...]] = set()
    get = observed.candidates.get
    for src in spec.candidates:
        key = import_key(src, spec)
        cobs = get((src.set_name, src.cand_id))
        summ = cobs.summary if cobs is not None else None  # the record's summary: no full record is decoded here
        if summ is not None and summ.key == key:
            cset = elements[src.set_name]
            if cset.check_elements and summ.n_elements != cset.elements:
                _check_elements(spec, src, cset, summ.n_elements, summ.formula)
            if not qe:
                continue
            species = summ.species_list()
        elif not generate and isinstance(src, GeneratedSource):
            continue
        else:
            cset = elements[src.set_name]
            rec = out[(src.set_name, src.cand_id)] = candidate_record(spec, src, predict=False)
            species = record_elements(rec)
        if qe and tuple(species) not in checked:  # each distinct element set once
            checked.add(tuple(species))
            for name in qe:
                qe_pseudo_files(spec, name, species)
                if spec.manifest.profiles[name].ecutwfc_ry is None:
                    qe_cutoffs(spec, name, species)
    if any(s.rank is not None for s in spec.manifest.candidate_sets) and out:
        from aimmat.model.rank import attach_predictions

        attach_predictions(spec, out)
    return out


def _imported(spec: CampaignSpec, src, observed: Observed) -> bool:
    cobs = observed.candidates.get((src.set_name, src.cand_id))
    return bool(cobs and cobs.summary and cobs.summary.key == import_key(src, spec))


def candidate_record(spec: CampaignSpec, src, predict: bool = True) -> CandidateRecord:
    """Parse (or generate) a candidate's structure and build its record (checks element count)."""
    cset = next(s for s in spec.manifest.candidate_sets if s.name == src.set_name)
    inputs = import_inputs(src, spec)
    if isinstance(src, GeneratedSource):
        from aimmat.model.rank import generated_structure

        structure = generated_structure(spec, src)
    else:
        structure = read_structure(src)
    n_el = len(structure.composition.elements)
    _check_elements(spec, src, cset, n_el, structure.composition.reduced_formula)
    rec = CandidateRecord(
        set_name=src.set_name,
        cand_id=src.cand_id,
        elements=cset.elements,
        n_elements=n_el,
        formula=structure.composition.reduced_formula,
        species=sorted(el.symbol for el in structure.composition.elements),
        key=stage_key(inputs),
        key_inputs=inputs,
        structure=structure.as_dict(),
        structure_sha256=structure_sha256(structure),
        provenance=src.provenance(),
    )
    if predict and cset.rank_model():
        from aimmat.model.rank import attach_predictions

        attach_predictions(spec, {(src.set_name, src.cand_id): rec})
    return rec


def _check_elements(spec: CampaignSpec, src, cset, n_el: int, formula: str) -> None:
    if cset.check_elements and n_el != cset.elements:
        i = spec.sets().index(src.set_name)
        raise ManifestError(
            f"{spec.path}: candidate_sets.{i}.elements: {src.path} holds {formula} with {n_el} element(s), "
            f"but set '{src.set_name}' declares elements: {cset.elements}",
            fix="move the file to the matching set, or set `check_elements: false` on the set",
        )
