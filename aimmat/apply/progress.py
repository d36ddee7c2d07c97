"""Progress of an apply: one status line on a terminal, one line per finished task otherwise."""

from __future__ import annotations

import sys
from collections import Counter

from aimmat.manifest import stage_table


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.done: Counter = Counter()
        self.running: Counter = Counter()
        self.failed = 0

    def _line(self) -> str:
        stages = sorted(set(self.done) | set(self.running), key=lambda s: (stage_table.order(s), s))
        parts = [f"{s} {self.done[s]}" + (f" (+{self.running[s]} running)" if self.running[s] else "") for s in stages]
        return "apply: " + " | ".join(parts) + (f" | failed {self.failed}" if self.failed else "")

    def start(self, stage: str) -> None:
        self.running[stage] += 1
        if self.enabled and self.tty:
            print("\r" + self._line(), end="", file=sys.stderr, flush=True)

    def finish(self, res) -> None:
        self.running[res.stage] -= 1
        self.done[res.stage] += 1
        self.failed += res.status == "failed"
        if not self.enabled:
            return
        if self.tty:
            print("\r" + self._line() + "\033[K", end="", file=sys.stderr, flush=True)
        else:
            tail = f" ({res.failure_code})" if res.failure_code else ""
            print(f"  {res.stage:8s} {res.set_name}/{res.cand_id}: {res.status}{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
