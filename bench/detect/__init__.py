"""Detector quality: a seeded audit-log simulator with labelled attack campaigns, and
the scoring of the anomaly detectors' alerts against it (see README.md)."""
