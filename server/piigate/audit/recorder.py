"""Stage 9: the one place that records outcomes: it writes each call's audit event and
counts its decision.

The pipeline hands it every outcome of every call, whatever raised (its envelope catches
everything from the subject stage through shaping), so an event per decision holds by
construction rather than by where code happens to catch. How an error is recorded
(denied or failed, an event kind of its own) is read from the error class
(`piigate.errors`); anything that is not a `GatewayError` is recorded as a failed call
with reason INTERNAL.

Fail closed: an allowed outcome whose event cannot be written is returned as
AUDIT_UNAVAILABLE instead of its data. A refusal whose event cannot be written is still
refused (no PII is being returned), and the operator is told in the log.
"""

from __future__ import annotations

import logging

from piigate.audit.event import AuditFacts, AuditSink, FieldDisclosure
from piigate.errors import GatewayError, TokenCarriesDeniedClaim
from piigate.policy.shaping import Disclosure
from piigate.transport.metrics import Metrics

log = logging.getLogger(__name__)


class AuditRecorder:
    """Writes the audit event of every outcome and counts every decision."""

    def __init__(self, sink: AuditSink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics

    async def allowed(self, facts: AuditFacts, disclosure: Disclosure) -> Disclosure | GatewayError:
        """Record a disclosure; its data may leave only if this returns it."""
        fields = [FieldDisclosure(f.name, f.disclosure, disclosure.notes.get(f.name))
                  for f in disclosure.fields]
        try:
            await self._sink.write(facts.event("allowed", fields))
        except GatewayError as exc:  # the sink's own AUDIT_UNAVAILABLE
            self._count(facts.profile, "failed", exc.reason)
            return exc
        self._count(facts.profile, "allowed", "OK")
        return disclosure

    async def refused(self, facts: AuditFacts, exc: BaseException) -> GatewayError:
        """Record a refusal or failure; returns the error to answer with (an unexpected
        exception becomes a bare INTERNAL: its text never leaves the process)."""
        if isinstance(exc, GatewayError):
            error = exc
        else:
            log.error("unexpected %s in the request path; answered INTERNAL", type(exc).__name__)
            error = GatewayError()
        if isinstance(error, TokenCarriesDeniedClaim):
            self._metrics.inc("piigate_denied_claims_total", issuer=str(facts.subject_iss),
                              claim=error.metadata.get("claim", "-"))
        event = facts.event(error.audit_outcome, error_reason=error.reason,
                            event=error.audit_event)
        self._count(facts.profile, event.outcome, error.reason)
        try:
            await self._sink.write(event)
        except GatewayError:
            log.error("audit sink failed while recording a %s outcome", event.outcome)
        return error

    def _count(self, profile: str | None, outcome: str, reason: str) -> None:
        self._metrics.inc(
            "piigate_decisions_total", outcome=outcome, reason=reason, profile=profile or "-"
        )
