"""Google-signed ID tokens for probes of private Cloud Run services (`auth: id_token`).

An edge: tokens are minted through google-auth from the runtime credentials (a service
account key file, the metadata server on Google Cloud, or Workload Identity Federation in
GitHub Actions) and live only in memory, never in a result, log line, repr or state file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from reconciler.errors import ReconcileError

IdTokenSource = Callable[[str], str]
"""Audience in, ID token out: what a `Prober` needs to call a private service."""

# Google's ID tokens live one hour; renewing well before the end keeps a token sent in a
# long bench or watch run from expiring in flight.
REUSE_SECONDS: Final = 30 * 60


class IdTokenError(ReconcileError):
    """No ID token could be minted (no usable credentials, no permission)."""


def default_audience(url: str) -> str:
    """The audience Cloud Run expects for a request to `url` (pure).

    Cloud Run checks the token's audience against the service's URL. A tag URL
    (`https://canary---svc-abc-uc.a.run.app/x`) belongs to the service at the URL without
    the tag (`https://svc-abc-uc.a.run.app`), so the tag is dropped along with the path.
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    _, sep, untagged = host.partition("---")
    return f"{parts.scheme}://{untagged if sep else host}"


class GoogleIdTokens:
    """Mints ID tokens from Application Default Credentials; one per audience, reused.

    Called as `tokens(audience)`. Thread-safe: probes of several services run on a pool.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return "GoogleIdTokens()"

    def __call__(self, audience: str) -> str:
        with self._lock:
            cached = self._cache.get(audience)
            if cached is not None and time.monotonic() - cached[1] < REUSE_SECONDS:
                return cached[0]
            token = _mint(audience)
            self._cache[audience] = (token, time.monotonic())
            return token


def _mint(audience: str) -> str:
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    request = google.auth.transport.requests.Request()
    try:
        try:
            # A service account key file, or the metadata server (Cloud Run, GCE, GKE).
            fetch: Callable[[object, str], str] = google.oauth2.id_token.fetch_id_token
            return fetch(request, audience)
        except google.auth.exceptions.DefaultCredentialsError:
            # Workload Identity Federation (GitHub Actions) gives external-account
            # credentials that impersonate a service account; fetch_id_token does not read
            # those, so the IAM Credentials API signs a token for that service account.
            credentials, _ = google.auth.default()
            email = getattr(credentials, "service_account_email", None)
            if not email:
                raise
            return _impersonated(credentials, email, audience, request)
    except google.auth.exceptions.GoogleAuthError as exc:
        # The library's messages name files and endpoints, never a token.
        # (Some of them carry the HTTP response as a second argument: keep the text.)
        why = exc.args[0] if exc.args else exc
        raise IdTokenError(f"cannot mint an ID token for {audience}: {why}") from None


def _impersonated(credentials: object, email: str, audience: str, request: object) -> str:
    from google.auth import impersonated_credentials

    target = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=credentials,
        target_principal=email,
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    signer = impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
        target, target_audience=audience, include_email=True
    )
    signer.refresh(request)
    return str(signer.token)
