"""``authsvc login aws``: exchange the caller's AWS identity for a session credential."""

from __future__ import annotations

import click

from authsvc.cli.common import fail
from authsvc.cli.sessions import login_group


@login_group.command("aws")
@click.option("--registry", default=None,
              help="registry host (or URL): authsvc's realm and service are read from its "
                   "challenge")
@click.option("--realm", default=None, help="authsvc's token URL (instead of --registry)")
@click.option("--service", default=None, help="the registry's service name (with --realm)")
@click.option("--server-id", required=True,
              help="the server id authsvc is configured with (identities.aws.server_id)")
@click.option("--sts-host", default="sts.amazonaws.com", show_default=True,
              help="the STS host to sign for (one of authsvc's sts_endpoints)")
@click.option("--region", default=None,
              help="the signing region [default: the STS host's, else us-east-1]")
def login_aws(registry: str | None, realm: str | None, service: str | None, server_id: str,
              sts_host: str, region: str | None) -> None:
    """Sign sts:GetCallerIdentity with this machine's AWS credentials, exchange it once
    and print the session credential for `docker login -u '<token>' --password-stdin`."""
    from authsvc import awsclient
    from authsvc.login import LoginError

    try:
        challenge = awsclient.challenge_for(registry=registry, realm=realm, service=service)
        credential = awsclient.login(challenge, server_id=server_id, sts_host=sts_host,
                                     region=region)
    except LoginError as exc:
        fail(str(exc))
    click.echo(credential.secret)
