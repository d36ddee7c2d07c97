"""Candidates whose import is pending: parsed (or generated) and checked
before anything is written, so a bad structure file stops diff and apply
with exit 3 and an untouched folder."""

from __future__ import annotations

from aimmat.candidates.models import Models
from aimmat.errors import ManifestError
from aimmat.identity import structure_sha256
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.sources import GeneratedSource, read_structure
from aimmat.resolve.keys import stage_key
from aimmat.state.records import CandidateRecord, record_elements
from aimmat.state.scan import Observed

Key = tuple[str, str]


def incoming(spec: CampaignSpec, observed: Observed, import_keys: dict[Key, str], import_inputs, models: Models,
             *, generate: bool = True) -> dict[Key, CandidateRecord]:
    """CandidateRecords of every candidate whose import is pending (no
    record, or another import key). Imported candidates are checked against
    their set's element count from the record summary (no decoding).

    ``generate=False`` (diff) skips generator candidates: their checkpoint
    was already checked against its pinned sha256 when the manifest loaded.
    """
    sets = {s.name: s for s in spec.manifest.candidate_sets}
    get = observed.candidates.get
    pending = []
    for src in spec.candidates:
        cobs = get((src.set_name, src.cand_id))
        summ = cobs.summary if cobs is not None else None  # the record's summary: no full record is decoded here
        if summ is not None and summ.key == import_keys[(src.set_name, src.cand_id)]:
            _check_elements(spec, src, sets[src.set_name], summ.n_elements, summ.formula)
        elif generate or not isinstance(src, GeneratedSource):
            pending.append(src)
    gen = [s for s in pending if isinstance(s, GeneratedSource)]
    if gen:
        models.pregenerate(gen)
    out = {(src.set_name, src.cand_id): candidate_record(spec, src, import_inputs(src), models) for src in pending}
    if out and any(s.rank is not None for s in sets.values()):
        models.attach_predictions(out.values())
    return out


def species_sets(spec: CampaignSpec, observed: Observed, new: dict[Key, CandidateRecord]) -> set[str]:
    """Element sets (SEP-joined) of the manifest's candidates, imported or incoming: what resolve needs."""
    from aimmat.state.summary import SEP

    out = {SEP.join(record_elements(rec)) for rec in new.values()}
    get = observed.candidates.get
    for src in spec.candidates:
        cobs = get((src.set_name, src.cand_id))
        if cobs is not None and cobs.summary is not None and (src.set_name, src.cand_id) not in new:
            out.add(cobs.summary.species)
    return out


def candidate_record(spec: CampaignSpec, src, inputs: dict, models: Models) -> CandidateRecord:
    """Parse (or generate) a candidate's structure and build its record (checks element count)."""
    cset = next(s for s in spec.manifest.candidate_sets if s.name == src.set_name)
    if isinstance(src, GeneratedSource):
        structure = models.structure(src)
    else:  # errors name the file and the source's manifest key
        structure = read_structure(src, where=f"{spec.path}: candidate_sets.{spec.sets().index(src.set_name)}.source")
    n_el = len(structure.composition.elements)
    _check_elements(spec, src, cset, n_el, structure.composition.reduced_formula)
    return CandidateRecord(
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


def _check_elements(spec: CampaignSpec, src, cset, n_el: int, formula: str) -> None:
    if cset.check_elements and n_el != cset.elements:
        i = spec.sets().index(src.set_name)
        raise ManifestError(
            f"{spec.path}: candidate_sets.{i}.elements: {src.path} holds {formula} with {n_el} element(s), "
            f"but set '{src.set_name}' declares elements: {cset.elements}",
            fix="move the file to the matching set, or set `check_elements: false` on the set",
        )
