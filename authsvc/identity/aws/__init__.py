"""AWS IAM identities: a signed ``sts:GetCallerIdentity`` request as the credential.

settings.py       the ``identities.aws`` configuration
proof.py          the wire format and every check made before anything reaches STS
sts.py            calling STS with the client's signed request; parsing its answer
authenticator.py  proof -> Identity (ARN normalised, claims), one-time use, reuse
"""
