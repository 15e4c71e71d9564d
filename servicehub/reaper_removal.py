"""The reaper's removal of one session it decided to reap: the one teardown (``teardown.py``),
without waiting for the session's lock, and one last look at the access log."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from .accesslog import LogPosition, read_new_requests
from .activity import Activity, Verdict, Why
from .reaper_decision import Judged
from .teardown import Ended, LockUnusable, Teardown

log = logging.getLogger("servicehub.reaper")
_NOT_REMOVED = {
    Ended.BUSY: (Verdict.SKIP, "the daemon is starting or re-routing it: next run"),
    Ended.KEPT: (Verdict.KEEP, "a request arrived during this run"),
    Ended.REPLACED: (Verdict.SKIP, "replaced by a new container meanwhile"),
}


async def remove(
    teardown: Teardown, access_log: Path, judged: Judged, position: LogPosition | None
) -> Judged:
    """Remove the session's container; the result says what happened instead if it was not:
    kept (a request came in meanwhile), skipped (the daemon holds the session, or it has a new
    container) or an error (one session's failure never stops the others)."""
    info, decision = judged.info, judged.decision
    assert decision is not None and decision.action is Verdict.REAP
    late: Activity | None = None

    async def request_arrived() -> bool:
        """Last look: a request logged while this run was deciding keeps the session. Every
        line after this run's position is such a request, whatever its wall-clock time."""
        nonlocal late
        if decision.kind is not Why.IDLE:
            return False
        requests, _ = read_new_requests(access_log, position)
        when = requests.get(info.key.provider_router(teardown.hub))
        if when is not None and (position is not None or when > decision.last.time):
            late = Activity(when, "access-log")
            return True
        return False

    try:
        ended = await teardown.stop(
            info.key, info.container_id, wait=None, last_look=request_arrived
        )
    except LockUnusable as exc:
        reason = f"session lock unusable ({exc}); not removed"
        return replace(judged, decision=replace(decision, action=Verdict.ERROR, reason=reason))
    except Exception as exc:
        log.exception("removing %s failed", info.name)
        reason = f"removal failed: {exc}"
        return replace(judged, decision=replace(decision, action=Verdict.ERROR, reason=reason))
    if ended not in _NOT_REMOVED:
        return judged
    verdict, reason = _NOT_REMOVED[ended]
    changed = replace(decision, action=verdict, reason=reason)
    if late is not None:
        changed = replace(changed, last=late, idle_for=0.0)
    return replace(judged, decision=changed)
