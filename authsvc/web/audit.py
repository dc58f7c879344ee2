"""``GET /audit/export``: the audit trail, streamed, for admins.

For admins only (``admin.accounts``, Basic auth), like ``POST /policy/explain``. The
query takes the filters of ``authsvc audit export`` and the answer is its output,
streamed (chunked) at the pace of the source: the JSON Lines files of the file sink, or
the store's audit stream (``audit.sink: redis``; the running app's own store, so a
``memory://`` store can be exported too).

Everything that can be refused is checked before the first byte is sent: the caller,
the parameters, and that the source can be read (its first event is read up front, so
a store that does not answer is a ``503``). A failure after that can only cut the
stream short: it is logged, and the chunked answer ends without its last chunk.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request, stream_with_context

from authsvc.audit.formats import FORMATS
from authsvc.audit.source import Filter, live_events, parse_when
from authsvc.audit.verify import MalformedLine
from authsvc.errors import BadRequest, ServiceUnavailable
from authsvc.service import TokenService
from authsvc.web.client import request_client_ip
from authsvc.web.token import parse_basic_auth

__all__ = ["MIMETYPES", "OUTCOMES", "bp"]

log = logging.getLogger(__name__)

bp = Blueprint("audit", __name__)

#: The media type of each export format (``ocsf`` and ``ecs`` are JSON Lines too).
MIMETYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "ocsf": "application/x-ndjson",
    "ecs": "application/x-ndjson",
}
OUTCOMES = ("success", "partial", "failure")
_PARAMETERS = ("format", "since", "until", "actor", "repository", "outcome")


def _parameters() -> dict[str, str]:
    args = request.args
    unknown = sorted(set(args) - set(_PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown parameters {', '.join(unknown)} (use {', '.join(_PARAMETERS)})")
    params: dict[str, str] = {}
    for name in _PARAMETERS:
        values = args.getlist(name)
        if not values:
            continue
        if len(set(values)) > 1:
            raise BadRequest(f"{name!r} is given more than once with different values")
        if not values[0]:
            raise BadRequest(f"{name!r} must not be empty")
        params[name] = values[0]
    return params


def _when(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return parse_when(text)
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{name!r}: {exc}") from exc


def _filter(params: dict[str, str]) -> Filter:
    outcome = params.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"'outcome' must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    return Filter(
        since_ms=_when(params, "since"),
        until_ms=_when(params, "until"),
        actor=params.get("actor"),
        repository=params.get("repository"),
        outcome=outcome,
    )


def _format(params: dict[str, str]) -> str:
    fmt = params.get("format", "jsonl")
    if fmt not in FORMATS:
        raise BadRequest(f"'format' must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


@bp.get("/audit/export")
def export_endpoint() -> Response:
    runtime = current_app.extensions["authsvc"]
    service: TokenService = runtime.service
    service.authenticate_admin(
        parse_basic_auth(request.headers.get("Authorization")), client_ip=request_client_ip()
    )
    params = _parameters()
    fmt = _format(params)
    wanted = _filter(params)

    source = live_events(runtime.settings, runtime.store)
    # Read the first event now: a source that cannot be read is still an error answer
    # (a store that does not answer raises StoreUnavailable, a 503, by itself).
    try:
        head = list(itertools.islice(source, 1))
    except (OSError, MalformedLine) as exc:
        log.error("cannot read the audit trail: %s", exc)
        raise ServiceUnavailable("cannot read the audit trail") from exc
    events = wanted.apply(itertools.chain(head, source))

    def chunks() -> Iterator[str]:
        try:
            yield from FORMATS[fmt](events)
        except Exception:
            log.exception("the audit export (format %s) was cut short", fmt)
            raise

    response = Response(stream_with_context(chunks()), mimetype=MIMETYPES[fmt])
    response.headers["Cache-Control"] = "no-store"
    return response
