"""Labelled attack campaigns: what each one does, and which detector should catch it.

Each campaign type is a generator (``passwords.py``, ``access.py``, ``proofs.py``) that
drafts its events with the campaign's id and says what it did. :data:`EXPECTED` is the
contract with ``authsvc/anomaly``: the detector names, as they appear in
``alert.detector``, that should raise an alert for the type. A campaign's events are
only its attacker's requests: a victim's own traffic before and after stays benign.

Campaigns start at random times after the warm-up days (so that the detectors have
seen everyone's habits), and never reuse a victim, a dormant account or a workload of
another campaign of the same seed.
"""

from __future__ import annotations

from bench.detect.attacks import access, passwords, proofs
from bench.detect.attacks.common import Cast, Generator, Planned

__all__ = ["EXPECTED", "GENERATORS", "Cast", "Planned"]

#: campaign type -> the detectors expected to alert on it
EXPECTED: dict[str, tuple[str, ...]] = {
    "slow_spray": ("password_spray",),
    "fast_spray": ("password_spray",),
    "brute_force": ("brute_force",),
    "credential_stuffing": ("credential_stuffing",),
    "success_after_spray": ("success_after_spray",),
    "stolen_credential": ("new_context",),
    "ci_outside_runners": ("ci_outside_ci",),
    "mass_pull": ("mass_pull",),
    "scope_probing": ("scope_probing",),
    "dormant_reuse": ("dormant_credential",),
    "off_hours_push": ("off_hours_push",),
    "proof_reuse": ("proof_reuse",),
}


#: campaign type -> its generator
GENERATORS: dict[str, Generator] = {
    "slow_spray": passwords.slow_spray,
    "fast_spray": passwords.fast_spray,
    "brute_force": passwords.brute_force,
    "credential_stuffing": passwords.credential_stuffing,
    "success_after_spray": passwords.success_after_spray,
    "stolen_credential": access.stolen_credential,
    "ci_outside_runners": proofs.ci_outside_runners,
    "mass_pull": access.mass_pull,
    "scope_probing": access.scope_probing,
    "dormant_reuse": access.dormant_reuse,
    "off_hours_push": access.off_hours_push,
    "proof_reuse": proofs.proof_reuse,
}
