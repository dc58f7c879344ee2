"""The consumer of ``authsvc detect run``, put together from the configuration.

It needs the audit trail in Redis (``audit.sink: redis`` and a ``redis://`` storage):
the stream is what a consumer group reads. A trail in files is evaluated with ``authsvc
detect replay`` over an export. Alerts are recorded through ``build_audit`` with
``on_failure: deny`` whatever the configuration says: the consumer has no caller
waiting, so when Redis fails it stops and leaves its batch pending rather than spool
alerts that another consumer could record again meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authsvc.anomaly.consumer import Consumer, HoldingConsumer
from authsvc.anomaly.held_state import HeldState, Lease
from authsvc.anomaly.metrics import Metrics, serve_metrics
from authsvc.anomaly.outbox import Outbox
from authsvc.anomaly.redis_state import RedisState
from authsvc.anomaly.replay import build_engine
from authsvc.anomaly.stream import GroupStream
from authsvc.anomaly.webhook import Sender, Webhook, read_secret
from authsvc.audit.build import build_audit
from authsvc.audit.chain import ChainedAuditLog
from authsvc.config import Settings
from authsvc.errors import KeyRingError, StoreUnavailable
from authsvc.store import Store, open_store
from authsvc.store.redis import HEALTH_CHECK_INTERVAL, SOCKET_TIMEOUT
from authsvc.tokens import KeyRing

__all__ = ["PREFIX", "Live", "LiveConfigError", "default_consumer_name", "open_live"]

#: The store's key prefix (``open_store``'s): the stream and the detector state.
PREFIX = "authsvc:"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class LiveConfigError(ValueError):
    """The configuration cannot run a consumer (the message says why)."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Live:
    consumer: Consumer
    audit: ChainedAuditLog
    webhook: Webhook | None
    metrics_server: ThreadingHTTPServer | None
    client: redis.Redis
    store: Store
    address: str

    def close(self, webhook_wait: float = 5.0) -> None:
        """Stop the webhook senders and the metrics endpoint; seal the audit log with a
        last checkpoint (raises if it cannot, after releasing everything else)."""
        try:
            if self.webhook is not None:
                self.webhook.stop(webhook_wait)
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            self.audit.close()
        finally:
            self.client.close()
            with contextlib.suppress(StoreUnavailable):
                self.store.close()


def check_settings(settings: Settings) -> None:
    if settings.audit.sink != "redis":
        raise LiveConfigError(
            f"detect run reads the audit stream in Redis, and audit.sink is "
            f"{settings.audit.sink!r}: set audit.sink: redis (with a redis:// storage), or "
            f"run `authsvc detect replay` over an export (`authsvc audit export`)"
        )
    if not settings.storage.startswith(REDIS_SCHEMES):
        raise LiveConfigError(
            f"detect run needs the audit stream in a shared Redis, and storage is "
            f"{settings.storage!r}: use a redis:// storage"
        )


def open_live(
    settings: Settings,
    *,
    consumer_name: str,
    batch: int = 100,
    block_ms: int = 1000,
    min_idle: float = 30.0,
    from_start: bool = False,
    metrics_bind: tuple[str, int] | None = None,
    prefix: str = PREFIX,
) -> Live:
    """Connect, create the group if needed, start the webhook senders and the metrics
    endpoint. LiveConfigError: the configuration; StoreUnavailable: Redis; OSError: the
    metrics address."""
    check_settings(settings)
    anomaly = settings.anomaly
    secret = None
    if anomaly.webhook is not None:
        try:
            secret = read_secret(anomaly.webhook.secret_file)
        except ValueError as exc:
            raise LiveConfigError(str(exc)) from exc
    directory = settings.keys.dir
    try:
        KeyRing.load(directory).signing_key  # noqa: B018 (fail now, not at a checkpoint)
    except KeyRingError as exc:
        raise LiveConfigError(f"alerts are checkpointed with the signing key: {exc}") from exc

    client: redis.Redis = redis.Redis.from_url(
        settings.storage,
        decode_responses=True,
        socket_timeout=block_ms / 1000 + SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(NoBackoff(), 0),
    )
    kwargs = client.connection_pool.connection_kwargs
    address = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    store = open_store(settings.storage, prefix=prefix)
    try:
        group = anomaly.consumer_group
        state: HeldState | RedisState
        if anomaly.consumer_state == "memory":
            state = HeldState(client, prefix=prefix, group=group)
        else:
            state = RedisState(client, prefix=prefix)
        try:
            engine = build_engine(anomaly, state)
        except ValueError as exc:  # a geo database that cannot be read
            raise LiveConfigError(str(exc)) from exc
        stream = GroupStream(
            client, prefix=prefix, group=anomaly.consumer_group, consumer=consumer_name
        )
        stream.create_group(from_start=from_start)
        audit, _ = build_audit(
            settings.audit.model_copy(update={"on_failure": "deny"}),
            store=store,
            signer=lambda: KeyRing.load(directory).signing_key,
        )
    except BaseException:
        client.close()
        raise

    outbox = Outbox(client, prefix=prefix)

    def gauges() -> dict[str, int | None]:
        backlog = stream.backlog()
        waiting, dead = outbox.sizes()
        return {
            "pending": backlog.pending,
            "lag": backlog.lag,
            "webhook_outbox": waiting,
            "webhook_dead": dead,
        }

    metrics = Metrics(((d.name, d.severity) for d in engine.detectors), gauges)
    webhook = None
    if anomaly.webhook is not None and secret is not None:
        hook = anomaly.webhook
        webhook = Webhook(
            outbox,
            Sender(hook.url, secret, hook.timeout),
            max_attempts=hook.max_attempts,
            min_severity=hook.min_severity,
            timeout=hook.timeout,
            on=metrics.add,
        )
    consumer: Consumer
    queue = webhook.queue if webhook is not None else None
    if isinstance(state, HeldState):
        lease = Lease(client, prefix=prefix, group=group, consumer=consumer_name,
                      seconds=anomaly.consumer_lease)  # fmt: skip
        consumer = HoldingConsumer(
            stream, engine, state, lease, audit, metrics=metrics, queue=queue, batch=batch,
            block_ms=min(block_ms, lease.ms // 3), poll=min(1.0, anomaly.consumer_lease / 4),
        )  # fmt: skip
    else:
        consumer = Consumer(
            stream, engine, audit, metrics=metrics, queue=queue,
            batch=batch, block_ms=block_ms, min_idle=min_idle,
        )  # fmt: skip
    server = None
    if metrics_bind is not None:
        try:
            server = serve_metrics(metrics, *metrics_bind)
        except OSError:
            audit.close()
            client.close()
            raise
    if webhook is not None:
        webhook.start()
    return Live(consumer, audit, webhook, server, client, store, address)
