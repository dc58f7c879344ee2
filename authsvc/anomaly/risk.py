"""The risk response: shorter tokens for a principal with an open anomaly alert.

A rule with ``open_alert_token_ttl`` caps the lifetime of the tokens it grants while the
caller has an alert open (``authsvc detect run`` opens one for the alert's window). The
read is one store round trip, made only when such a rule matched. If the store cannot
answer, the token gets its usual lifetime and a warning is logged (at most once a
minute): a shorter lifetime is a response, not an access decision.
"""

from __future__ import annotations

import logging

from authsvc.anomaly.backoff import WARN_EVERY
from authsvc.errors import StoreUnavailable
from authsvc.identity import Identity
from authsvc.store import Store

__all__ = ["OpenAlerts", "principal_of"]

log = logging.getLogger(__name__)

def principal_of(identity: Identity) -> str:
    """The principal as alerts name it (``provider:account``; the subject without one)."""
    return f"{identity.provider}:{identity.account or identity.subject}"


class OpenAlerts:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._warned_at: int | None = None

    def detector(self, identity: Identity, now: int) -> str | None:
        """The detector whose alert on this identity is open, or None."""
        if identity.anonymous:
            return None
        try:
            return self._store.open_alert(principal_of(identity), now)
        except StoreUnavailable as exc:
            # At most one warning a minute (of the service's clock), as the backoff does.
            if self._warned_at is None or not 0 <= now - self._warned_at < WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "open anomaly alerts cannot be read (%s): usual token lifetimes", exc.message
                )
            return None
