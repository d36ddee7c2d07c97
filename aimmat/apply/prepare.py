"""Before the first write: candidates parsed or generated, the campaign resolved.

diff and apply share this step, so the plan diff prints is the plan apply
starts from: same import keys, same element sets, same recipes.
"""

from __future__ import annotations

from dataclasses import dataclass

from aimmat.candidates.incoming import incoming, species_sets
from aimmat.candidates.models import Models
from aimmat.manifest.load import CampaignSpec
from aimmat.resolve import Resolved, resolve
from aimmat.resolve.imports import import_inputs, import_keys, predictor_sha256
from aimmat.resolve.palette import campaign_palette
from aimmat.state.scan import Observed


@dataclass
class Prepared:
    resolved: Resolved
    incoming: dict  # (set, candidate) -> CandidateRecord to import
    models: Models


def prepare(spec: CampaignSpec, observed: Observed, *, generate: bool = True, progress: bool = True) -> Prepared:
    """Parse new source files (and, with ``generate``, sample new generated
    candidates and predict their tensors), then resolve the campaign for
    every element set in play. Raises ManifestError (exit 3) or
    EnvironmentProblem (exit 5) before anything is written."""
    palette = campaign_palette(spec)  # before generation: the generator samples within it
    predictors = predictor_sha256(spec)
    keys = import_keys(spec, predictors, palette.key_value())
    models = Models(spec, progress=progress, palette=palette.elements)
    new = incoming(spec, observed, keys, lambda src: import_inputs(src, predictors.get(src.set_name), palette.key_value()),
                   models, generate=generate)
    return Prepared(resolve(spec, species_sets(spec, observed, new), import_keys_=keys, palette=palette), new, models)
