# authsvc: token service for container registries.
#   docker build -t authsvc .
#   docker run -p 5001:5001 \
#     -v $PWD/authsvc.yaml:/etc/authsvc/authsvc.yaml:ro \
#     -v $PWD/keys:/etc/authsvc/keys:ro authsvc
# The configuration's keys.dir should be /etc/authsvc/keys (or relative: keys/), and the
# audit trail must go somewhere writable: audit.file.path, audit.spool and
# audit.key_file under /var/lib/authsvc (a volume), e.g.
#   audit: {file: {path: /var/lib/authsvc/audit.jsonl}, spool: /var/lib/authsvc/spool.jsonl,
#           key_file: /var/lib/authsvc/fingerprint.key}
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AUTHSVC_CONFIG=/etc/authsvc/authsvc.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY authsvc ./authsvc
RUN pip install . && rm -rf /root/.cache \
    && groupadd --system authsvc \
    && useradd --system --gid authsvc --no-create-home --shell /usr/sbin/nologin authsvc \
    && mkdir -p /etc/authsvc/keys /var/lib/authsvc \
    && chown authsvc:authsvc /var/lib/authsvc && chmod 0700 /var/lib/authsvc

USER authsvc
EXPOSE 5001
VOLUME ["/etc/authsvc", "/var/lib/authsvc"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:5001/readyz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["authsvc", "serve", "--bind", "0.0.0.0:5001"]
CMD ["--threads", "8"]
