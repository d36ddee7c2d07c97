"""Records: what the campaign folder says happened.

``candidate.json`` holds a candidate's structure and provenance;
``<stage>/record.json`` a StageRecord. Both are written atomically by apply
only; everything else reads them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aimmat.manifest import stage_table


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attempt(_Rec):
    n: int
    key: str = Field(description="Stage key this attempt ran under; retries keep the key.")
    started: str
    ended: str | None = None
    status: Literal["running", "done", "failed", "interrupted"]
    failure_code: str | None = None
    message: str | None = None
    intervention: str | None = Field(None, description="What this attempt changed, e.g. 'restart from last structure'.")
    wave: str | None = Field(None, description="The frozen rerun wave that triggered this attempt (aimmat waves freeze).")
    wall_s: float | None = None


class StageRecord(_Rec):
    stage: str
    key: str
    key_inputs: dict[str, Any]
    status: Literal["running", "done", "failed"]
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = Field(None, description="Start tick of pid, guards against pid reuse.")
    attempts: list[Attempt] = Field(default_factory=list)
    failure_code: str | None = None
    output_present: bool = False
    retryable: bool = False
    outputs: dict[str, Any] = Field(default_factory=dict)

    def result(self):
        """``outputs`` through the stage's typed result model (``aimmat.stages.results``)."""
        return stage_table.get(self.stage).result.model_validate(self.outputs)


class CandidateRecord(_Rec):
    set_name: str
    cand_id: str
    elements: int = Field(description="The set's element-count label at import.")
    n_elements: int = Field(description="Distinct elements in the structure.")
    formula: str
    species: list[str] = Field(default_factory=list, description="Sorted element symbols.")
    key: str
    key_inputs: dict[str, Any]
    structure: dict[str, Any]
    structure_sha256: str
    provenance: dict[str, Any]
    prediction: dict[str, Any] | None = Field(None, description="Predicted elastic tensor and ranking terms (model sets).")


def record_elements(rec: CandidateRecord) -> list[str]:
    """Sorted element symbols of a candidate (from the record, or its structure)."""
    if rec.species:
        return rec.species
    return sorted({sp["element"] for site in rec.structure["sites"] for sp in site["species"]})
