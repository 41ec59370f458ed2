"""Reading the service account's API token from the configured source."""

from __future__ import annotations

from app.config import EnvToken, FileToken, SecretToken, TokenSource
from app.deadline import Deadline
from app.errors import ConfigError


def read_token(source: TokenSource, deadline: Deadline, *, request_timeout: float, kube_relaxed_x509: bool = False) -> str:
    """The token, surrounding whitespace and newlines stripped. Never logged. A Secret is read within `deadline`."""
    if isinstance(source, SecretToken):
        from app.secret import read_secret_token

        token = read_secret_token(
            source.name, source.key, source.namespace, deadline,
            request_timeout=request_timeout, relaxed_x509=kube_relaxed_x509,
        )
    elif isinstance(source, FileToken):
        try:
            token = source.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the token {source.describe()}: {type(exc).__name__}") from None
    elif isinstance(source, EnvToken):
        token = source.value.strip()
    else:  # pragma: no cover - config.py builds only the three kinds
        raise TypeError(source)
    if not token:
        raise ConfigError(f"the token in {source.describe()} is empty")
    if any(c.isspace() for c in token):
        raise ConfigError(f"the token in {source.describe()} contains whitespace: is it really one token?")
    return token
