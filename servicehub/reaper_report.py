"""The reaper's report: one row per session for people (the table, ``--json``, the journal).

A row is made from the run's result for that session (``reaper_decision.Judged``) once the
removals are done: it shows what happened, not only what was decided.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from .activity import Verdict
from .journal import event
from .reaper_decision import Judged
from .times import iso

log = logging.getLogger("servicehub.reaper")
_VERBS = {
    Verdict.KEEP: "keep",
    Verdict.REAP: "reaped",
    Verdict.SKIP: "skipped",
    Verdict.ERROR: "error",
}


@dataclass
class Row:
    """One session's line in the run's report (and in the journal)."""

    user: str
    app: str
    slug: str
    container: str
    container_id: str
    last_activity: float | None
    source: str
    idle_for: float
    age: float
    decision: Verdict
    reason: str

    @classmethod
    def of(cls, judged: Judged) -> Row:
        info, decision = judged.info, judged.decision
        if decision is None:  # left alone: no activity looked at
            last, source, idle_for, age = None, "-", 0.0, judged.age
            verdict, reason = Verdict.SKIP, judged.skipped
        else:
            last, source = decision.last.time, decision.last.source
            idle_for, age = decision.idle_for, decision.age
            verdict, reason = decision.action, decision.reason
        return cls(
            user=info.user,
            app=info.app,
            slug=info.slug,
            container=info.name,
            container_id=info.container_id,
            last_activity=last,
            source=source,
            idle_for=idle_for,
            age=age,
            decision=verdict,
            reason=reason,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["decision"] = str(self.decision)
        data["last_activity"] = iso(self.last_activity) if self.last_activity else None
        data["idle_for"] = round(self.idle_for, 1)
        data["age"] = round(self.age, 1)
        return data

    @property
    def said(self) -> str:
        """What a logged row says in short: the decision and the signal it rests on."""
        return f"{self.decision}:{self.source}"

    def shown(self, dry_run: bool) -> str:
        """The decision as the table says it: with --dry-run, reap means "would reap"."""
        return "would reap" if dry_run and self.decision is Verdict.REAP else str(self.decision)


def worth_logging(row: Row, before: str | None, dry_run: bool) -> bool:
    """Every removal, error and dry-run row is logged; a row that keeps or skips a session only
    when its decision or signal differs from the last one logged for that container
    (``before``). At 2,000 sessions one entry each per run was half the run's time."""
    if dry_run or row.decision in (Verdict.REAP, Verdict.ERROR):
        return True
    return before != row.said


def log_row(hub: str, row: Row, dry_run: bool) -> None:
    """One log line (and journal entry) for one session's row."""
    verb = "would reap" if dry_run and row.decision is Verdict.REAP else _VERBS[row.decision]
    log.log(
        logging.ERROR if row.decision is Verdict.ERROR else logging.INFO,
        "%s app=%s slug=%s container=%s: %s",
        verb,
        row.app,
        row.slug,
        row.container,
        row.reason,
        extra=event(
            "reap-decision",
            hub=hub,
            app=row.app,
            slug=row.slug,
            user=row.user,
            container=row.container,
            decision=row.decision,
            reason=row.reason,
            signal=row.source,
            last_activity=iso(row.last_activity) if row.last_activity else None,
            idle_seconds=int(row.idle_for),
            age_seconds=int(row.age),
            dry_run="1" if dry_run else "0",
        ),
    )
