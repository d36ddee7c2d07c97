"""Record summaries: the few fields of a record the plan reads.

A warm ``diff`` of 100k candidates must not decode 400k records (structure
dicts, key inputs, attempts) to compare four hashes per candidate. The index
(``aimmat.state.index``) stores each record's summary in plain columns next
to its body, and ``scan`` hands the plan summaries; a full record is decoded
only when something asks for it (``CandidateObs.record`` / ``.stages``).

A summary is a tuple of plain values (str, int, None) that ``marshal``
packs into the index as it is. Lists are joined with ``SEP``; booleans are
0/1 (only their truth is used). The same function (``of``) builds the
summary of a record read from its file, so a plan from the index and a
plan from the files see identical values.
"""

from __future__ import annotations

from typing import NamedTuple

from aimmat.state.records import CandidateRecord, StageRecord, record_elements

SEP = "\x1f"  # ASCII unit separator: not in element symbols or criterion names


class StageSummary(NamedTuple):
    key: str
    status: str
    n_attempts: int
    retryable: int
    failure_code: str | None
    host: str | None
    pid: int | None
    pid_start: int | None
    structure_sha256: str | None  # of the stage's output structure (relax; a screen's pre-relaxation)
    metallic: int | None  # outputs.engine.metallic
    strict_pass: int | None  # screens
    failed_criteria: str  # SEP-joined names of the screen criteria that failed
    output_present: int

    @classmethod
    def of(cls, rec: StageRecord) -> StageSummary:
        out = rec.outputs
        engine = out.get("engine")
        metallic = engine.get("metallic") if isinstance(engine, dict) else None
        strict = out.get("strict_pass")
        criteria = out.get("criteria")
        # a criterion may name its own reason ("no_pseudopotential: Nd"); else its name
        failed = SEP.join(str(c.get("reason") or n) for n, c in criteria.items() if not c.get("pass")) if isinstance(criteria, dict) else ""
        sha = out.get("structure_sha256")
        if sha is None and isinstance(out.get("prerelax"), dict):  # a screen's ML pre-relaxed structure
            sha = out["prerelax"].get("structure_sha256")
        return cls(rec.key, rec.status, len(rec.attempts), int(rec.retryable), rec.failure_code, rec.host, rec.pid,
                   rec.pid_start, sha, None if metallic is None else int(bool(metallic)),
                   None if strict is None else int(bool(strict)), failed, int(rec.output_present))

    def failed_list(self) -> list[str]:
        return self.failed_criteria.split(SEP) if self.failed_criteria else []


class CandidateSummary(NamedTuple):
    key: str
    structure_sha256: str
    species: str  # SEP-joined sorted element symbols
    n_elements: int
    formula: str
    elements: int  # the set's element-count label

    @classmethod
    def of(cls, rec: CandidateRecord) -> CandidateSummary:
        return cls(rec.key, rec.structure_sha256, SEP.join(record_elements(rec)), rec.n_elements, rec.formula,
                   rec.elements)

    def species_list(self) -> list[str]:
        return self.species.split(SEP) if self.species else []
