"""Checkpoints and generated structures of one command.

torch and the checkpoint are loaded only when a campaign needs them, and
once per command: ``Models`` holds them (the spec itself stays immutable).
"""

from __future__ import annotations

import sys

from aimmat.manifest.load import CampaignSpec


class Models:
    """Loaded checkpoints and generated structures, per command."""

    def __init__(self, spec: CampaignSpec, progress: bool = True, palette=None):
        self.spec = spec
        self.progress = progress
        self.palette = palette  # element symbols the generator may use (None: any)
        self._checkpoints: dict[str, object] = {}
        self._generated: dict[tuple[str, int], object] = {}

    def checkpoint(self, name: str):
        if name not in self._checkpoints:
            from aimmat.model import checkpoint

            m = self.spec.manifest.models[name]
            self._checkpoints[name] = checkpoint.load(self.spec.model_file(name), m.sha256, where=f"models.{name}")
        return self._checkpoints[name]

    def pregenerate(self, sources) -> None:
        """Sample the given GeneratedSources (one call per set: sample i
        depends only on checkpoint, seed and i)."""
        from aimmat.model.sample import sample

        by_set: dict[str, list] = {}
        for src in sources:
            if (src.set_name, src.frame) not in self._generated:
                by_set.setdefault(src.set_name, []).append(src)
        for set_name, srcs in by_set.items():
            first = srcs[0]
            ckpt = self.checkpoint(first.model)
            schedule = dict(first.schedule) or ckpt.sampler

            def report(done, total, _s=set_name):
                if self.progress:
                    print(f"\rgenerate {_s}: {done}/{total}", end="", file=sys.stderr, flush=True)

            samples = sample(ckpt.vae, len(srcs), first.n_elements, first.seed, schedule,
                             indices=[s.frame for s in srcs], progress=report, palette=self._palette_z(),
                             guidance=ckpt.meta.get("guidance"))
            if self.progress:
                print(file=sys.stderr)
            for s in samples:
                self._generated[(set_name, s.index)] = s.structure

    def _palette_z(self) -> list[int] | None:
        if self.palette is None:
            return None
        from pymatgen.core.periodic_table import Element

        return sorted(Element(el).Z for el in self.palette)

    def structure(self, src):
        """The generated structure of a GeneratedSource."""
        if (src.set_name, src.frame) not in self._generated:
            self.pregenerate([src])
        return self._generated[(src.set_name, src.frame)]

    def attach_predictions(self, records) -> None:
        """Fill ``prediction`` of new CandidateRecords whose set is ranked (batched per model)."""
        from pymatgen.core import Structure

        from aimmat.model.rank import predict

        sets = {s.name: s for s in self.spec.manifest.candidate_sets}
        by_model: dict[str, list] = {}
        for rec in records:
            model = sets[rec.set_name].rank_model()
            if model and rec.prediction is None:
                by_model.setdefault(model, []).append(rec)
        for model, recs in by_model.items():
            preds = predict(self.checkpoint(model), [Structure.from_dict(r.structure) for r in recs])
            for r, p in zip(recs, preds):
                r.prediction = p
