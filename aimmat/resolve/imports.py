"""Import keys: what a candidate's structure depends on (pure).

A file candidate depends on its source file's sha256, frame and format; a
generated one on (checkpoint sha256, seed, index, element count, schedule,
element palette).
For a ranked set the prediction stored with the candidate depends on the
ranking checkpoint too.
"""

from __future__ import annotations

from typing import Any

from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.sources import CandidateSource, GeneratedSource
from aimmat.manifest import stage_table
from aimmat.resolve.keys import HOLE, fill, fillable, stage_key, template


def predictor_sha256(spec: CampaignSpec) -> dict[str, str | None]:
    """Set name -> sha256 of the checkpoint that ranks it (None: not ranked)."""
    out = {}
    for cset in spec.manifest.candidate_sets:
        model = cset.rank_model()
        out[cset.name] = spec.manifest.models[model].sha256.lower() if model else None
    return out


def import_inputs(src: CandidateSource, predictor: str | None = None, palette: list[str] | None = None) -> dict[str, Any]:
    """Canonical import inputs of ``src``. ``palette``: the sorted element
    palette the generator samples within (None: unrestricted; it then stays
    out of the key, so campaigns without one keep their keys)."""
    recipe = stage_table.get_import().recipe_version
    if isinstance(src, GeneratedSource):
        out: dict[str, Any] = {"recipe": recipe, "checkpoint_sha256": src.sha256, "seed": src.seed, "index": src.frame,
                               "n_elements": src.n_elements, "schedule": dict(src.schedule) or None}
        if palette is not None:
            out["palette"] = list(palette)
    else:
        out = {"recipe": recipe, "source_sha256": src.sha256, "frame": src.frame, "format": src.fmt}
    if predictor:  # the prediction stored with the candidate comes from this checkpoint
        out["predictor_sha256"] = predictor
    return out


def import_keys(spec: CampaignSpec, predictors: dict[str, str | None], palette: list[str] | None = None) -> dict[tuple[str, str], str]:
    """(set, candidate) -> import key of every candidate. File sources hash
    a template per (set, format, frame) around the source file's sha256."""
    templates: dict[tuple, Any] = {}
    out = {}
    for src in spec.candidates:
        predictor = predictors.get(src.set_name)
        key = None
        if not isinstance(src, GeneratedSource) and fillable(src.sha256):
            tk = (src.set_name, src.fmt, src.frame)
            if tk not in templates:
                holed = CandidateSource(src.set_name, "", "", "", HOLE, src.fmt, src.frame)
                templates[tk] = template(import_inputs(holed, predictor))
            if templates[tk] is not None:
                key = fill(templates[tk], src.sha256)
        out[(src.set_name, src.cand_id)] = key or stage_key(import_inputs(src, predictor, palette))
    return out
