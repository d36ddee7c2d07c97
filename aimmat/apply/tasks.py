"""A pending action turned into a StageTask: everything a worker needs,
as plain data (it may travel to a Parsl worker on another node)."""

from __future__ import annotations

from aimmat.apply.runner import StageTask
from aimmat.candidates.incoming import candidate_record
from aimmat.plan.actions import StageAction
from aimmat.resolve import Resolved


def make_task(res: Resolved, a: StageAction, cobs, prepared) -> StageTask:
    """``prepared``: the apply's ``Prepared`` (incoming candidate records, loaded models)."""
    base = dict(campaign_dir=str(res.campaign_dir), set_name=a.set_name, cand_id=a.cand_id, stage=a.stage, key=a.key,
                key_inputs=a.key_inputs)
    if a.stage == "import":
        rec = prepared.incoming.get((a.set_name, a.cand_id))
        if rec is None:  # `--replace import` of an unchanged source: parse it again
            src = next(s for s in res.spec.candidates if (s.set_name, s.cand_id) == (a.set_name, a.cand_id))
            rec = candidate_record(res.spec, src, res.import_inputs(src), prepared.models)
            prepared.models.attach_predictions([rec])
        return StageTask(**base, candidate=rec.model_dump(mode="json"))
    recipe = res.recipes[a.stage]
    source = recipe.source
    csum = cobs.summary
    if source == "import":
        structure, metallic = cobs.record.structure, None
    else:
        up = cobs.stages[source].result()
        structure, metallic = up.structure, cobs.summaries[source].metallic
    settings = cobs.stages[recipe.settings_from].result().chosen if recipe.settings_from else None
    if (settings and settings.get("start_structure_sha256")
            and source == res.recipes[recipe.settings_from].source):
        # converge vc-relaxed this same input cell at the chosen cutoff (its probe cell): relax
        # starts there instead of redoing the same steps
        probe = cobs.stages[recipe.settings_from].result().probe or {}
        if probe.get("ok") and probe.get("structure"):
            structure = probe["structure"]
    wave = res.wave_for(a.set_name, a.cand_id, a.stage)
    profile = recipe.task_profile(csum.species, metallic, res.retry_policy, settings, wave)
    if wave is not None:  # every attempt it triggers carries the wave; the first one its intervention
        return StageTask(**base, run=recipe.stage.run, structure=structure, stage_cfg=recipe.run_config(), profile=profile,
                         max_attempts=wave.max_attempts, wave=wave.wave, intervention=f"wave {wave.wave}: {wave.intervention}")
    return StageTask(**base, run=recipe.stage.run, structure=structure, stage_cfg=recipe.run_config(),
                     profile=profile, max_attempts=res.max_attempts)
