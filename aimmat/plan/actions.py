"""Plan vocabulary: an action per candidate stage, with its reasons."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Action(str, Enum):
    CREATE = "create"
    RERUN = "rerun"
    KEEP = "keep"
    BLOCKED = "blocked"
    ORPHAN = "orphan"


PENDING = (Action.CREATE, Action.RERUN)


@dataclass(slots=True)
class StageAction:
    set_name: str
    cand_id: str
    stage: str  # "import", a stage name, or "candidate"/"set" for orphans
    action: Action
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    key_inputs: dict | None = None
    state: str | None = None  # kept: done / failed / running / screened_out; blocked: waiting / not_shortlisted

    @property
    def pending(self) -> bool:
        return self.action in PENDING

    def to_json(self) -> dict:
        d = asdict(self)
        d["action"] = self.action.value
        return d


@dataclass
class Plan:
    actions: list[StageAction]

    def count(self, action: Action) -> int:
        return sum(1 for a in self.actions if a.action == action)

    @property
    def has_changes(self) -> bool:
        return any(a.action in PENDING or a.action == Action.ORPHAN for a in self.actions)

    @property
    def orphans(self) -> list[StageAction]:
        return [a for a in self.actions if a.action == Action.ORPHAN]

    def pending_candidates(self) -> list[tuple[str, str]]:
        """(set, candidate) with a pending action, in plan order, once each."""
        return list(dict.fromkeys((a.set_name, a.cand_id) for a in self.actions if a.pending))

    def to_json(self) -> dict:
        return {
            "summary": {a.value: self.count(a) for a in Action},
            "has_changes": self.has_changes,
            "actions": [a.to_json() for a in self.actions],
        }
