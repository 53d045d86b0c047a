"""Every test runs away from the real cloud: no Application Default Credentials, and Google's
auth library may not probe the GCE metadata server (it is not on loopback). A test that
reaches for real credentials fails at once with the reconciler's no-credentials error.

`hooks`: a loopback webhook receiver that records what it is sent. `isolated_git`, for
modules that run git themselves: no user configuration, hooks or leaked
`GIT_*` variables reach the test's git processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.testing.env import isolated_env
from reconciler.testing.git import git_environment
from reconciler.testing.webhooks import WebhookRecorder

_NO_CLOUD = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
}


@pytest.fixture(autouse=True, scope="session")
def no_real_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    changes: dict[str, str | None] = {**_NO_CLOUD, "GOOGLE_APPLICATION_CREDENTIALS": None}
    # gcloud's ADC file lives in its config directory: point it at an empty one.
    changes["CLOUDSDK_CONFIG"] = str(Path(tmp_path_factory.mktemp("gcloud-config")))
    with isolated_env(changes):
        yield


@pytest.fixture
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git as a fresh machine has it: a temporary home, no system configuration."""
    for key, value in git_environment(tmp_path / "home").items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)


@pytest.fixture
def hooks() -> Iterator[WebhookRecorder]:
    """A webhook receiver on loopback recording each request, for notification tests."""
    with WebhookRecorder.start() as recorder:
        yield recorder
