"""ASN and country from MaxMind-format databases (GeoLite2-ASN, GeoLite2-Country or
compatible), read with the ``maxminddb`` reader when it is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from authsvc.anomaly.settings import GeoSettings

__all__ = ["MaxMindLookup", "open_geo"]


class MaxMindLookup:
    def __init__(self, asn_db: Path | None, country_db: Path | None) -> None:
        try:
            import maxminddb
        except ImportError as exc:
            raise ValueError(
                "anomaly.geo needs the maxminddb reader: pip install 'authsvc[geo]'"
            ) from exc
        try:
            self._asn = maxminddb.open_database(str(asn_db)) if asn_db else None
            self._country = maxminddb.open_database(str(country_db)) if country_db else None
        except (OSError, ValueError) as exc:
            raise ValueError(f"anomaly.geo: cannot read the database: {exc}") from exc

    @staticmethod
    def _get(reader: Any, ip: str) -> dict[str, Any] | None:
        try:
            record = reader.get(ip)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def asn(self, ip: str) -> str | None:
        record = self._get(self._asn, ip) if self._asn is not None else None
        number = record.get("autonomous_system_number") if record else None
        return f"AS{number}" if isinstance(number, int) else None

    def country(self, ip: str) -> str | None:
        record = self._get(self._country, ip) if self._country is not None else None
        country = record.get("country") if record else None
        code = country.get("iso_code") if isinstance(country, dict) else None
        return code if isinstance(code, str) else None


def open_geo(settings: GeoSettings) -> MaxMindLookup | None:
    if settings.asn_db is None and settings.country_db is None:
        return None
    return MaxMindLookup(settings.asn_db, settings.country_db)
