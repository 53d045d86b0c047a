#!/bin/sh
# Clone the rollout repository, then run the streaming controller on it. Extra arguments go
# to `reconcile watch --stream` (default: --duration 24h; the platform restarts the worker).
set -eu

: "${RECONCILE_GIT_URL:?set RECONCILE_GIT_URL to the https URL of the rollout repository}"
repo="${RECONCILE_REPO_DIR:-$HOME/rollouts}"

if [ -n "${RECONCILE_GIT_TOKEN:-}" ]; then
    # The token travels in an HTTP header set through the environment: never in the URL
    # (git prints URLs in errors) and never in a config file on disk.
    basic=$(printf 'x-access-token:%s' "$RECONCILE_GIT_TOKEN" | base64 | tr -d '\n')
    GIT_CONFIG_COUNT=1
    GIT_CONFIG_KEY_0=http.extraHeader
    GIT_CONFIG_VALUE_0="Authorization: Basic $basic"
    export GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0
    unset RECONCILE_GIT_TOKEN basic
fi

if [ -n "${PORT:-}" ]; then
    # Run as a Cloud Run service (`reconcile setup gcp --stream-image`), the instance must
    # listen on $PORT before it counts as started; a worker pool sets no PORT.
    python3 /usr/local/bin/reconcile-health &
fi

rm -rf "$repo"
git clone --quiet "$RECONCILE_GIT_URL" "$repo"
exec reconcile --repo "$repo" watch --stream "$@"
