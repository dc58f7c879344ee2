"""The detectors, built from ``anomaly.detectors`` (disabled ones left out)."""

from __future__ import annotations

from authsvc.anomaly.detectors.access import (
    FirstTimePushDetector,
    MassPullDetector,
    OffHoursPushDetector,
    ScopeProbingDetector,
)
from authsvc.anomaly.detectors.credentials import (
    BruteForceDetector,
    CredentialStuffingDetector,
    SprayDetector,
    SuccessAfterSprayDetector,
)
from authsvc.anomaly.detectors.identity import (
    CiOutsideCiDetector,
    DormantCredentialDetector,
    NewContextDetector,
    ProofReuseDetector,
)
from authsvc.anomaly.engine import Detector
from authsvc.anomaly.settings import Detectors

__all__ = ["NAMES", "build_detectors"]


def build_detectors(settings: Detectors) -> list[Detector]:
    d = settings
    every: list[tuple[bool, Detector]] = [
        (
            d.password_spray.enabled,
            SprayDetector(
                d.password_spray,
                flag_for=d.success_after_spray.window,
                successes=d.success_after_spray.enabled,
            ),
        ),
        (d.success_after_spray.enabled, SuccessAfterSprayDetector(d.success_after_spray)),
        (d.brute_force.enabled, BruteForceDetector(d.brute_force)),
        (d.credential_stuffing.enabled, CredentialStuffingDetector(d.credential_stuffing)),
        (d.ci_outside_ci.enabled, CiOutsideCiDetector(d.ci_outside_ci)),
        (d.scope_probing.enabled, ScopeProbingDetector(d.scope_probing)),
        (d.mass_pull.enabled, MassPullDetector(d.mass_pull)),
        (d.new_context.enabled, NewContextDetector(d.new_context, d.ci_outside_ci)),
        (d.first_time_push.enabled, FirstTimePushDetector(d.first_time_push)),
        (d.off_hours_push.enabled, OffHoursPushDetector(d.off_hours_push)),
        (d.dormant_credential.enabled, DormantCredentialDetector(d.dormant_credential)),
        (d.proof_reuse.enabled, ProofReuseDetector(d.proof_reuse)),
    ]
    return [detector for enabled, detector in every if enabled]


NAMES = tuple(name for name in Detectors.model_fields)
