"""Commit messages of the reconciler: subjects, trailers and the loop-prevention marker."""

from __future__ import annotations

import pytest

from reconciler.gitops import (
    DEFAULT_EMAIL,
    DEFAULT_NAME,
    Action,
    BotIdentity,
    GitOpsError,
    canary_change,
    format_message,
    format_subject,
    is_reconciler_commit,
    parse_trailers,
    reconcile_trailers,
)


def test_subject_of_a_traffic_change() -> None:
    summary = canary_change(0, 5, "ion-api-00042-xyz")
    assert format_subject("ion-api", summary) == (
        "reconcile(ion-api): canary 0% -> 5% (ion-api-00042-xyz)"
    )
    assert format_subject("ion-api", "  record\n state ") == "reconcile(ion-api): record state"
    assert canary_change(5, 0, None) == "canary 5% -> 0%"


def test_full_message() -> None:
    message = format_message(
        "reconcile(ion-api): rollback",
        body="error_rate 7.1% > 5% (2 windows)\n",
        trailers=reconcile_trailers("ion-api", Action.ROLLBACK, "abc123"),
    )
    assert message == (
        "reconcile(ion-api): rollback [skip reconcile]\n"
        "\n"
        "error_rate 7.1% > 5% (2 windows)\n"
        "\n"
        "Reconcile-Service: ion-api\n"
        "Reconcile-Action: rollback\n"
        "Reconcile-Spec: abc123\n"
        "Reconcile-Skip: true\n"
    )


def test_message_without_marker_or_trailers() -> None:
    assert format_message("promote", skip_reconcile=False) == "promote\n"
    assert format_message("x [skip reconcile]").count("[skip reconcile]") == 1


@pytest.mark.parametrize(
    ("subject", "trailers", "error"),
    [
        ("  ", None, "needs a subject"),
        ("s", {"Bad Key": "v"}, "invalid trailer"),
        ("s", {"Key": "two\nlines"}, "invalid trailer"),
        ("s", {"Key": " "}, "invalid trailer"),
    ],
    ids=["empty-subject", "key-with-space", "multiline-value", "blank-value"],
)
def test_invalid_messages(subject: str, trailers: dict[str, str] | None, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        format_message(subject, trailers=trailers)


MESSAGES = [
    ("marker-in-subject", "reconcile(a): x [skip reconcile]\n", True, {}),
    ("trailer-only", "reconcile(a): x\n\nReconcile-Skip: true\n", True, {"Reconcile-Skip": "true"}),
    ("trailer-false", "x\n\nReconcile-Skip: false\n", False, {"Reconcile-Skip": "false"}),
    ("human", "Raise ion-api to 10%\n\nReviewed in #12.\n", False, {}),
    ("marker-in-body", "Fix\n\nmentions [skip reconcile] in prose\n", False, {}),
    ("empty", "", False, {}),
    (
        "promote",
        "reconcile(a): promote\n\nbody\n\nReconcile-Service: a\nReconcile-Action: promote\n",
        False,
        {"Reconcile-Service": "a", "Reconcile-Action": "promote"},
    ),
    ("mixed-last-paragraph", "x\n\nKey: v\nnot a trailer\n", False, {}),
]


@pytest.mark.parametrize(
    ("message", "skip", "trailers"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES]
)
def test_is_reconciler_commit_and_trailers(
    message: str, skip: bool, trailers: dict[str, str]
) -> None:
    assert is_reconciler_commit(message) is skip
    assert parse_trailers(message) == trailers


def test_every_formatted_commit_is_recognised() -> None:
    for action in Action:
        message = format_message("s", trailers=reconcile_trailers("svc", action))
        assert is_reconciler_commit(message)
        assert parse_trailers(message)["Reconcile-Action"] == action.value


def test_bot_identity() -> None:
    assert BotIdentity.from_env({}) == BotIdentity(DEFAULT_NAME, DEFAULT_EMAIL)
    assert BotIdentity.from_env({"RECONCILE_GIT_NAME": "x", "RECONCILE_GIT_EMAIL": ""}) == (
        BotIdentity("x", DEFAULT_EMAIL)
    )
    for bad in ({"name": "a<b>"}, {"email": "x\ny"}, {"name": " "}):
        with pytest.raises(GitOpsError, match="invalid git"):
            BotIdentity(**bad)
