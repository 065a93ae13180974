"""Session configuration and state transitions: clamping, precedence, expiry, renewal."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.errors import (
    InvalidSessionConfig,
    SessionEnded,
    SessionExpired,
    SessionRenewalFailed,
)
from trustwire.sessions.model import (
    ACTIVITY_RENEWAL_INTERVAL,
    MAX_METADATA_BYTES,
    Session,
    SessionConfig,
    SessionMessage,
    check_metadata,
    new_session_id,
    validate_timeout,
)

ALICE = "did:key:z6MkhaXgBZDvotDkL5257faiztiKC2RSkwWjTLW1Mm4qVbcG"
BOB = "did:key:z6MkfrQREUK7mDSoV9Bn3RhD7GZbYjXXkcVm5Vd3n4hmuW2e"
T0 = 1_750_000_000.0
MINUTE = 60.0

SEED = {
    "timeoutMinutes": 30,
    "autoRenew": True,
    "maxDurationMinutes": 720,
    "warningThresholdMinutes": 5,
}


def session(config: SessionConfig | None = None, **changes: object) -> Session:
    made = Session(
        id=new_session_id(),
        initiator=ALICE,
        peer=BOB,
        created_at=T0,
        last_activity=T0,
        config=config or SessionConfig(),
    )
    return dataclasses.replace(made, **changes) if changes else made


# -- configuration ---------------------------------------------------------------------


def test_builtin_defaults_match_elizaos() -> None:
    assert SessionConfig.resolve() == SessionConfig(30, True, 720, 5)


def test_seed_json_shape_is_accepted_as_is_and_round_trips() -> None:
    config = SessionConfig.resolve(SEED)
    assert config.to_json() == SEED
    assert SessionConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"timeoutMinutes": 1}, (5, 720, 5)),
        ({"timeoutMinutes": 10_000}, (1440, 1440, 5)),
        ({"timeoutMinutes": -3}, (5, 720, 5)),
        ({"maxDurationMinutes": 10}, (30, 30, 5)),  # raised to the timeout
        ({"maxDurationMinutes": 99_999}, (30, 2880, 5)),
        ({"timeoutMinutes": 100, "maxDurationMinutes": 50}, (100, 100, 5)),
        ({"warningThresholdMinutes": 0}, (30, 720, 1)),
        ({"warningThresholdMinutes": -7}, (30, 720, 1)),
        ({"warningThresholdMinutes": 10**9}, (30, 720, 2880)),
        ({"timeoutMinutes": 45.0}, (45, 720, 5)),  # JSON numbers may arrive as floats
    ],
)
def test_out_of_range_values_are_clamped_silently_on_create(
    given: dict[str, object], expected: tuple[int, int, int]
) -> None:
    config = SessionConfig.resolve(given)
    assert (
        config.timeout_minutes,
        config.max_duration_minutes,
        config.warning_threshold_minutes,
    ) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"timeoutMinutes": "30"}, "timeoutMinutes must be a whole number of minutes, not str"),
        ({"timeoutMinutes": True}, "timeoutMinutes must be a whole number of minutes, not bool"),
        ({"maxDurationMinutes": math.nan}, "maxDurationMinutes must be a finite number"),
        ({"warningThresholdMinutes": math.inf}, "must be a finite number"),
        ({"timeoutMinutes": 7.5}, "timeoutMinutes must be a whole number of minutes"),
        ({"autoRenew": "yes"}, "autoRenew must be true or false, not str"),
        ({"autoRenew": 1}, "autoRenew must be true or false, not int"),
        ({"timeout": 30}, "unknown setting(s) 'timeout'"),
        ({"timeoutMinutes": [30]}, "not list"),
    ],
)
def test_wrong_types_and_unknown_keys_are_refused_precisely(
    given: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSessionConfig) as raised:
        SessionConfig.resolve(given)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "fields",
    [
        (4, True, 720, 5),
        (30, True, 20, 5),
        (30, True, 720, 0),
        (30, 1, 720, 5),
        ("30", True, 720, 5),
    ],
)
def test_a_config_built_directly_must_already_be_in_range(fields: tuple[object, ...]) -> None:
    with pytest.raises(InvalidSessionConfig):
        SessionConfig(*fields)  # type: ignore[arg-type]


def test_a_config_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidSessionConfig, match="must be a JSON object"):
        SessionConfig.resolve([("timeoutMinutes", 30)])  # type: ignore[arg-type]


def test_bad_agent_defaults_are_refused_and_named_as_such() -> None:
    with pytest.raises(InvalidSessionConfig, match="agent session defaults: autoRenew"):
        SessionConfig.resolve(None, {"autoRenew": "no"})


def test_precedence_is_session_then_agent_then_builtin_key_by_key() -> None:
    agent = {"timeoutMinutes": 60, "autoRenew": False, "warningThresholdMinutes": 10}
    config = SessionConfig.resolve({"timeoutMinutes": 15}, agent)
    assert config == SessionConfig(
        timeout_minutes=15, auto_renew=False, max_duration_minutes=720, warning_threshold_minutes=10
    )


def test_none_means_not_given_so_the_next_layer_decides() -> None:
    config = SessionConfig.resolve({"timeoutMinutes": None}, {"timeoutMinutes": 60})
    assert config.timeout_minutes == 60


def test_max_duration_is_clamped_against_the_merged_timeout() -> None:
    # The agent layer's max duration is shorter than the session's timeout.
    config = SessionConfig.resolve({"timeoutMinutes": 120}, {"maxDurationMinutes": 60})
    assert (config.timeout_minutes, config.max_duration_minutes) == (120, 120)


@pytest.mark.parametrize("value", [5, 30, 1440, 60.0])
def test_validate_timeout_accepts_the_range(value: object) -> None:
    assert validate_timeout(value) == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", [4, 0, -1, 1441, 10**6])
def test_validate_timeout_rejects_instead_of_clamping(value: int) -> None:
    with pytest.raises(InvalidSessionConfig, match="between 5 and 1440"):
        validate_timeout(value)


@pytest.mark.parametrize("value", [None, "30", False, math.nan, 12.5])
def test_validate_timeout_rejects_wrong_types(value: object) -> None:
    with pytest.raises(InvalidSessionConfig):
        validate_timeout(value)


# -- expiry ----------------------------------------------------------------------------


def test_expiry_with_auto_renew_follows_last_activity() -> None:
    s = session(last_activity=T0 + 10 * MINUTE)
    assert s.expires_at == T0 + 40 * MINUTE


def test_expiry_without_auto_renew_counts_from_creation() -> None:
    s = session(SessionConfig(auto_renew=False), last_activity=T0 + 10 * MINUTE)
    assert s.expires_at == T0 + 30 * MINUTE
    assert s.status(T0 + 30 * MINUTE - 0.001) == "active"
    assert s.status(T0 + 30 * MINUTE) == "expired"


def test_expiry_is_capped_at_max_duration() -> None:
    s = session(SessionConfig(timeout_minutes=30, max_duration_minutes=60))
    late = dataclasses.replace(s, last_activity=T0 + 50 * MINUTE)
    assert late.expires_at == T0 + 60 * MINUTE


def test_status_ended_wins_over_expired() -> None:
    s = session(ended_at=T0 + 1, end_reason="done")
    assert s.status(T0 + 10_000 * MINUTE) == "ended"


def test_near_expiration_is_strictly_positive_and_within_the_threshold() -> None:
    s = session()
    assert not s.near_expiration(T0 + 24 * MINUTE)
    assert s.near_expiration(T0 + 25 * MINUTE)
    assert s.near_expiration(T0 + 30 * MINUTE - 1)
    assert not s.near_expiration(T0 + 30 * MINUTE)


def test_to_api_shows_epoch_milliseconds_and_never_negative_time() -> None:
    s = session(metadata={"topic": "x"})
    shown = s.to_api(T0 + 29 * MINUTE)
    assert shown["createdAt"] == int(T0 * 1000)
    assert shown["expiresAt"] == int((T0 + 30 * MINUTE) * 1000)
    assert shown["timeRemaining"] == 60_000
    assert shown["isNearExpiration"] is True
    assert shown["status"] == "active"
    assert shown["timeoutConfig"] == SessionConfig().to_json()
    assert shown["metadata"] == {"topic": "x"}
    later = s.to_api(T0 + 31 * MINUTE)
    assert later["timeRemaining"] == 0
    assert later["status"] == "expired"
    assert later["isNearExpiration"] is False
    for key in ("createdAt", "lastActivity", "expiresAt", "timeRemaining"):
        assert type(shown[key]) is int


# -- renewal ---------------------------------------------------------------------------


def test_explicit_renewal_works_without_auto_renew() -> None:
    s = session(SessionConfig(auto_renew=False))
    renewed = s.renewed(T0 + 20 * MINUTE)
    assert renewed.expires_at == T0 + 50 * MINUTE
    assert renewed.renewal_count == 1


def test_renewal_clears_the_warning_state() -> None:
    s = session(warned_for=T0 + 30 * MINUTE)
    assert s.renewed(T0 + 26 * MINUTE).warned_for is None


def test_renewal_is_refused_once_the_expiry_reaches_the_cap() -> None:
    s = session(SessionConfig(timeout_minutes=30, max_duration_minutes=60))
    s = s.renewed(T0 + 20 * MINUTE)  # expiry 50 < cap 60: allowed
    s = s.renewed(T0 + 40 * MINUTE)  # expiry moves to the cap (60)
    assert s.expires_at == s.cap
    with pytest.raises(SessionRenewalFailed, match="maximum duration of 60 minutes"):
        s.renewed(T0 + 45 * MINUTE)


def test_renewal_of_an_expired_or_ended_session_says_so() -> None:
    s = session()
    with pytest.raises(SessionExpired) as raised:
        s.renewed(T0 + 31 * MINUTE)
    assert raised.value.expires_at == int((T0 + 30 * MINUTE) * 1000)  # type: ignore[attr-defined]
    ended = s.ended(T0 + 1, reason="done", by=ALICE)
    with pytest.raises(SessionEnded):
        ended.renewed(T0 + 2)


def test_heartbeat_renews_only_with_auto_renew_and_never_fails_at_the_cap() -> None:
    on, renewed = session().heartbeat(T0 + 10 * MINUTE)
    assert renewed and on.renewal_count == 1 and on.expires_at == T0 + 40 * MINUTE
    off, renewed = session(SessionConfig(auto_renew=False)).heartbeat(T0 + 10 * MINUTE)
    assert not renewed and off.renewal_count == 0 and off.expires_at == T0 + 30 * MINUTE
    assert off.last_activity == T0 + 10 * MINUTE
    capped = session(SessionConfig(timeout_minutes=30, max_duration_minutes=30))
    beat, renewed = capped.heartbeat(T0 + 10 * MINUTE)
    assert not renewed and beat.expires_at == capped.cap


def test_message_activity_renews_but_counts_at_most_once_a_minute() -> None:
    s = session()
    counted = 0
    for second in range(1, 181):  # one message a second for three minutes
        s, renewed = s.touched(T0 + second)
        counted += renewed
    assert s.expires_at == T0 + 180 + 30 * MINUTE
    assert counted == s.renewal_count == 180 // int(ACTIVITY_RENEWAL_INTERVAL)


def test_activity_without_auto_renew_moves_nothing_but_last_activity() -> None:
    s = session(SessionConfig(auto_renew=False))
    touched, renewed = s.touched(T0 + 120)
    assert not renewed
    assert touched.expires_at == s.expires_at
    assert touched.last_activity == T0 + 120


def test_activity_older_than_the_last_is_ignored() -> None:
    s = session(last_activity=T0 + 100)
    assert s.touched(T0 + 50) == (s, False)


def test_timeout_change_is_strict_and_recomputes_the_expiry() -> None:
    s = session()
    shorter = s.with_timeout(10, T0 + 1)
    assert shorter.expires_at == T0 + 10 * MINUTE
    assert shorter.renewal_count == 0
    longer = s.with_timeout(1440, T0 + 1)
    assert longer.config.max_duration_minutes == 1440  # raised to the new timeout
    with pytest.raises(InvalidSessionConfig):
        s.with_timeout(4, T0 + 1)


def test_end_records_who_and_why() -> None:
    ended = session().ended(T0 + 5, reason="done", by=BOB)
    assert (ended.ended_at, ended.end_reason, ended.ended_by) == (T0 + 5, "done", BOB)
    with pytest.raises(SessionEnded):
        ended.ended(T0 + 6, reason="again", by=BOB)


# -- validation ------------------------------------------------------------------------


def test_metadata_is_bounded_to_ten_kilobytes_of_json() -> None:
    assert dict(check_metadata({"k": "v" * 100})) == {"k": "v" * 100}
    with pytest.raises(ValueError, match="the limit is 10240"):
        check_metadata({"k": "v" * MAX_METADATA_BYTES})
    with pytest.raises(ValueError, match="not JSON"):
        check_metadata({"k": math.nan})
    with pytest.raises(ValueError, match="JSON object"):
        check_metadata(["a"])


def test_a_session_with_oneself_or_a_bad_id_cannot_exist() -> None:
    with pytest.raises(ValueError, match="two different agents"):
        session(peer=ALICE)
    with pytest.raises(ValueError, match="UUID"):
        session(id="not-a-uuid")
    with pytest.raises(ValueError, match="UUID"):
        session(id=new_session_id().upper())


def test_message_metadata_is_validated() -> None:
    good = SessionMessage(new_session_id(), "ab" * 16, ALICE, BOB, "CHANNEL_DATA", 10, 5)
    assert good.to_api()["createdAt"] == 5
    with pytest.raises(ValueError, match="hex"):
        dataclasses.replace(good, message_id="XYZ")
    with pytest.raises(ValueError, match="size"):
        dataclasses.replace(good, size=-1)


# -- properties --------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
_keys = st.sampled_from(
    ["timeoutMinutes", "autoRenew", "maxDurationMinutes", "warningThresholdMinutes", "x"]
)


@settings(max_examples=150, deadline=None)
@given(
    session=st.dictionaries(_keys, _json_values, max_size=5),
    agent=st.none() | st.dictionaries(_keys, _json_values, max_size=5),
)
def test_resolve_only_ever_returns_an_in_range_config_or_refuses(
    session: dict[str, object], agent: dict[str, object] | None
) -> None:
    try:
        config = SessionConfig.resolve(session, agent)
    except InvalidSessionConfig:
        return
    assert 5 <= config.timeout_minutes <= 1440
    assert config.timeout_minutes <= config.max_duration_minutes <= 2880
    assert 1 <= config.warning_threshold_minutes <= 2880


@settings(max_examples=100, deadline=None)
@given(
    timeout=st.integers(5, 1440),
    longest=st.integers(5, 2880),
    auto_renew=st.booleans(),
    steps=st.lists(
        st.tuples(st.sampled_from(["touch", "renew", "beat"]), st.floats(0, 3 * 3600)),
        max_size=30,
    ),
)
def test_no_sequence_of_activity_and_renewals_outlives_the_max_duration(
    timeout: int, longest: int, auto_renew: bool, steps: list[tuple[str, float]]
) -> None:
    config = SessionConfig.resolve(
        {"timeoutMinutes": timeout, "maxDurationMinutes": longest, "autoRenew": auto_renew}
    )
    s = session(config)
    now = T0
    count = 0
    for action, gap in steps:
        now += gap
        if s.status(now) != "active":
            with pytest.raises((SessionExpired, SessionEnded)):
                s.renewed(now)
            break
        before = s.expires_at
        if action == "touch":
            s, renewed = s.touched(now)
        elif action == "beat":
            s, renewed = s.heartbeat(now)
        else:
            try:
                s, renewed = s.renewed(now), True
            except SessionRenewalFailed:
                assert before == s.cap
                renewed = False
        count += renewed
        assert s.expires_at <= s.cap
        assert s.expires_at >= before
        assert s.renewal_count == count
