"""Rules and the decision engine: pure, no I/O.

Every rule whose ``match`` holds for the identity contributes; for each requested
resource, granted = requested ∩ (union of allows) - (union of denies). Nothing is
allowed by default, deny wins, and ``*`` is granted only when every action is.
"""

from authsvc.policy.engine import ActionDecision, Decision, Policy, ScopeDecision

__all__ = ["ActionDecision", "Decision", "Policy", "ScopeDecision"]
