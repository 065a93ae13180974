"""Secretless Broker's own generic HTTP connector examples load and behave as documented.

Each fixture under ``fixtures/`` re-types one documented example (its first comment names
which). For each we check what the documentation says: the headers and query parameters
rendered for given credential values (base64 checked against an independent encoder, and
against the values Secretless's own tests assert), which URLs get credentials, and
``forceSSL``. Where trustwire departs from Secretless (providers it does not support,
oauth1, unknown keys Secretless ignores) the original form is checked to be refused with
a precise message.
"""

from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trustwire.broker.config import BrokerConfig, load_config, parse_config
from trustwire.broker.credentials import resolve
from trustwire.errors import ConfigurationError, CredentialUnavailable

FIXTURES = Path(__file__).parent / "fixtures"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def load(name: str) -> BrokerConfig:
    return load_config(FIXTURES / name)


@dataclass
class Example:
    fixture: str
    service: str
    values: dict[str, str]
    headers: dict[str, str]
    authenticated: list[str]
    not_authenticated: list[str] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    force_ssl: bool = True
    listen_on: str = ""


EXAMPLES = [
    Example(
        "readme_single_header.yml",
        "my_example_service",
        {"apikey": "ABC123"},
        {"X-ApiKey": "ABC123"},
        ["http://api.example.com/v1/items", "https://anything/"],
        ["ftp://api.example.com/", "//api.example.com/"],
        listen_on="tcp://0.0.0.0:8080",
    ),
    Example(
        "readme_basic_auth.yml",
        "service_requiring_basic_auth",
        {"username": "someuser", "password": "somepassword", "address": "valueofaddress"},
        {"Authorization": "Basic " + b64("someuser:somepassword")},
        ["http://anything.com/foo?fruit=apple"],
        ["ws://anything.com/"],
        query={"location": "valueofaddress"},
    ),
    Example(
        "elasticsearch.yml",
        "token-service",
        {"token": "es-token"},
        {"Authorization": "Bearer es-token"},
        ["http://localhost:9200/_search", "https://es.example.com/"],
        ["localhost:9200/_search", "httpx://es/"],
        listen_on="tcp://0.0.0.0:9030",
    ),
    Example(
        "elasticsearch.yml",
        "api-key-service",
        {"id": "es-id", "api_key": "es-key"},
        {"Authorization": "ApiKey ZXMtaWQ6ZXMta2V5"},
        ["http://localhost:9200/_cat/indices"],
        ["ftp://localhost/"],
        listen_on="tcp://0.0.0.0:9020",
    ),
    Example(
        "splunk.yml",
        "splunk",
        {"token": "splunk-token"},
        {"Authorization": "Bearer splunk-token"},
        ["http://SplunkServerDefaultCert:8089/services/apps/local"],
        ["ftp://SplunkServerDefaultCert/"],
    ),
    Example(
        "google_maps.yml",
        "google",
        {"api_key": "maps key/1"},
        {},
        ["http://maps.googleapis.com/maps/api/geocode/json?address=Paris"],
        query={"key": "maps key/1"},
    ),
    Example(
        "github.yml",
        "github",
        {"token": "ghp_x"},
        {"Authorization": "token ghp_x"},
        ["http://api.github.com/user/repos", "https://api.github.com/"],
        ["http://github.com/user", "http://gist.github.com/", "http://example.com/api.github"],
    ),
    Example(
        "stripe.yml",
        "stripe",
        {"token": "sk_test"},
        {"Authorization": "Bearer sk_test"},
        ["http://api.stripe.com/v1/charges"],
        ["http://stripe.com/v1/charges", "http://files.stripe.com/"],
        listen_on="tcp://0.0.0.0:8071",
    ),
    Example(
        "stripe.yml",
        "stripe-account",
        {"token": "sk_test", "stripe_account": "acct_1"},
        {"Authorization": "Bearer sk_test", "Stripe-Account": "acct_1"},
        ["http://api.stripe.com/v1/charges"],
    ),
    Example(
        "stripe.yml",
        "stripe-idempotency",
        {"token": "sk_test", "idempotency_key": "idem-1"},
        {"Authorization": "Bearer sk_test", "Idempotency-Key": "idem-1"},
        ["http://api.stripe.com/v1/charges"],
    ),
    Example(
        "stripe.yml",
        "stripe-account-idempotency",
        {"token": "sk_test", "stripe_account": "acct_1", "idempotency_key": "idem-1"},
        {
            "Authorization": "Bearer sk_test",
            "Stripe-Account": "acct_1",
            "Idempotency-Key": "idem-1",
        },
        ["https://api.stripe.com/v1/charges"],
        listen_on="tcp://0.0.0.0:9001",
    ),
    Example(
        "slack.yml",
        "slack-form-urlencoded",
        {"token": "xoxb-1"},
        {"Authorization": "Bearer xoxb-1", "Content-type": "application/x-www-form-urlencoded"},
        ["http://slack.com/api/chat.postMessage"],
        ["http://slack.com/", "http://slack.com/other", "http://hooks.slack.com/api/x"],
    ),
    Example(
        "slack.yml",
        "slack-json",
        {"token": "xoxb-1"},
        {"Authorization": "Bearer xoxb-1", "Content-type": "application/json; charset=utf-8"},
        ["http://slack.com/api/chat.postMessage"],
    ),
    Example(
        "papertrail.yml",
        "papertrail-token",
        {"token": "pt-token"},
        {"X-Papertrail-Token": "pt-token"},
        ["http://papertrailapp.com/api/v1/events/search.json"],
        ["http://papertrailapp.com/api/v2/", "http://papertrailapp.com/"],
    ),
    Example(
        "papertrail.yml",
        "papertrail-basic",
        {"user": "robot", "pass": "pw"},
        {"Authorization": "Basic cm9ib3Q6cHc="},
        ["https://papertrailapp.com/api/v1/systems.json"],
        ["https://papertrailapp.com/account"],
    ),
    Example(
        "datadog.yml",
        "datadog-client",
        {"client_key": "dd-api"},
        {"DD-API-KEY": "dd-api", "Content-Type": "application/json"},
        ["http://api.datadoghq.com/api/v1/user"],
    ),
    Example(
        "datadog.yml",
        "datadog-application",
        {"client_key": "dd-api", "application_key": "dd-app"},
        {
            "DD-API-KEY": "dd-api",
            "DD-APPLICATION-KEY": "dd-app",
            "Content-Type": "application/json",
        },
        ["http://api.datadoghq.com/api/v1/user"],
    ),
    Example(
        "twitter_oauth2.yml",
        "twitter-oauth2",
        {"token": "AAAA"},
        {"authorization": "Bearer AAAA", "content-type": "application/json"},
        ["http://api.twitter.com/1.1/followers/ids.json?screen_name=twitterdev"],
        ["http://twitter.com/"],
    ),
    # Secretless's integration test: literal credentials, Basic auth, with and without TLS
    Example(
        "connector_integration.yml",
        "basic_auth_http",
        {"username": "someuser", "password": "testpassword"},
        {"Authorization": " Basic c29tZXVzZXI6dGVzdHBhc3N3b3Jk"},
        ["http://test:8080/"],
        force_ssl=False,
        listen_on="tcp://0.0.0.0:8080",
    ),
    Example(
        "connector_integration.yml",
        "basic_auth_https",
        {"username": "someuser", "password": "testpassword"},
        {"Authorization": " Basic c29tZXVzZXI6dGVzdHBhc3N3b3Jk"},
        ["http://test:8081/"],
        listen_on="tcp://0.0.0.0:8081",
    ),
    # Secretless's unit test vectors (config_test.go: "creates expected headers/query params")
    Example(
        "connector_unit_test.yml",
        "sample",
        {"username": "Jonah", "password": "secret", "key": "someKey", "name": "Foo Bar"},
        {
            "Authorization": "Basic Sm9uYWg6c2VjcmV0",
            "Name-With-Dashes": "Jonah",
            "SimpleConcatenation": "Jonah - secret",
        },
        ["http://example.com"],
        query={"Key": "c29tZUtleQ==", "NameWithSpaces": "Foo Bar"},
    ),
]


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"{e.fixture[:-4]}:{e.service}" for e in EXAMPLES]
)
def test_documented_example_behaves_as_documented(example: Example) -> None:
    service = load(example.fixture).services[example.service]
    assert service.connector == "generic_http"
    assert service.http.render_headers(example.values) == example.headers
    assert service.http.render_query_params(example.values) == example.query
    assert service.http.force_ssl is example.force_ssl
    for url in example.authenticated:
        assert service.authenticates(url), url
    for url in example.not_authenticated:
        assert not service.authenticates(url), url
    if example.listen_on:
        assert str(service.listen_on) == example.listen_on
    # every credential the templates use is declared, and nothing else is needed
    assert service.http.variables() <= set(service.credentials)


def test_every_fixture_is_exercised_and_names_what_it_reproduces() -> None:
    fixtures = sorted(path.name for path in FIXTURES.glob("*.yml"))
    assert len(fixtures) >= 12
    refused = {"readme_oauth1.yml", "twitter.yml"}
    assert set(fixtures) == {e.fixture for e in EXAMPLES} | refused
    for name in fixtures:
        first_line = (FIXTURES / name).read_text(encoding="utf-8").splitlines()[0]
        assert first_line.startswith("# Reproduces "), name


def test_every_service_of_a_loaded_fixture_is_covered() -> None:
    covered = {(e.fixture, e.service) for e in EXAMPLES}
    for fixture in {e.fixture for e in EXAMPLES}:
        for name in load(fixture).services:
            assert (fixture, name) in covered, (fixture, name)


def test_keychain_examples_read_the_os_keystore_with_service_and_account() -> None:
    service = load("elasticsearch.yml").services["api-key-service"]
    assert service.credentials["id"].provider == "keyring"
    assert service.credentials["id"].get == "service#elasticsearch/api_key_id"


def test_stripe_pattern_also_matches_lookalike_hosts_as_in_go() -> None:
    # `^http[s]*\:\/\/api\.stripe\.com*` ends in "m*": Go matches any host starting with
    # "api.stripe.co", and so does trustwire. The documented pattern is loose; anchor
    # patterns with a trailing "/" to avoid this.
    service = load("stripe.yml").services["stripe"]
    assert service.authenticates("http://api.stripe.co.evil.example/")


def test_readme_validation_rejects_a_non_matching_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # "If this rule is violated at runtime, Secretless will log an appropriate error."
    service = load("readme_single_header.yml").services["my_example_service"]
    monkeypatch.setenv("MY_SERVICES_API_KEY", "ABC123")
    assert resolve(service) == {"apikey": "ABC123"}
    monkeypatch.setenv("MY_SERVICES_API_KEY", "lowercase-key")
    with pytest.raises(CredentialUnavailable, match="does not match its validation pattern"):
        resolve(service)


def test_readme_basic_auth_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    service = load("readme_basic_auth.yml").services["service_requiring_basic_auth"]
    monkeypatch.setenv("SOMEUSER", "someuser")
    monkeypatch.setenv("SOMEPASSWORD", "somepassword")
    values = resolve(service)
    assert service.http.render_headers(values) == {
        "Authorization": "Basic " + b64("someuser:somepassword")
    }
    assert service.http.render_query_params(values) == {"location": "valueofaddress"}
    # The README says "username cannot contain a colon", but its pattern '[^:]+' is not
    # anchored and Go's Match searches: it only needs one character that is not a colon.
    # trustwire matches the same way, so a username of only colons is refused...
    monkeypatch.setenv("SOMEUSER", ":::")
    with pytest.raises(CredentialUnavailable, match="'username' of service"):
        resolve(service)
    # ... and, as in Secretless, one with a colon inside is not.
    monkeypatch.setenv("SOMEUSER", "some:user")
    assert resolve(service)["username"] == "some:user"


def test_connector_integration_literal_credentials_resolve() -> None:
    config = load("connector_integration.yml")
    for name in ("basic_auth_http", "basic_auth_https"):
        service = config.services[name]
        assert service.http.render_headers(resolve(service)) == {
            "Authorization": " Basic c29tZXVzZXI6dGVzdHBhc3N3b3Jk"
        }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # config_test.go Test_validate: "errors on invalid credential"
        (
            {"SAMPLE_USERNAME": "Jon:ah"},
            "credential 'username' of service 'sample' does not match its validation pattern",
        ),
        # "errors on missing required credential"
        ({"SAMPLE_USERNAME": None}, "'SAMPLE_USERNAME' is not set"),
    ],
)
def test_connector_unit_test_validations(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str | None], message: str
) -> None:
    base = {
        "SAMPLE_USERNAME": "Jonah",
        "SAMPLE_PASSWORD": "secret",
        "SAMPLE_KEY": "someKey",
        "SAMPLE_NAME": "Foo Bar",
    }
    for name, value in (base | values).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(CredentialUnavailable) as caught:
        resolve(load("connector_unit_test.yml").services["sample"])
    assert message in str(caught.value)
    assert "Jon:ah" not in str(caught.value)


# -- where trustwire departs from Secretless, precisely ---------------------------------


def test_oauth1_examples_are_refused_with_a_pointer_to_oauth2() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load("readme_oauth1.yml")
    assert str(caught.value).endswith(
        "readme_oauth1.yml:15: services.oauth1-service.config.oauth1: "
        "oauth1 is not supported; use oauth2"
    )
    with pytest.raises(ConfigurationError) as caught:
        load("twitter.yml")
    assert "services.twitter-oauth1.config.oauth1: oauth1 is not supported; use oauth2" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("fixture", "old", "new", "message"),
    [
        # the README examples read their credentials from Conjur
        (
            "readme_single_header.yml",
            "from: env",
            "from: conjur",
            "services.my_example_service.credentials.apikey.from: "
            "the 'conjur' provider is not supported by trustwire",
        ),
        (
            "readme_basic_auth.yml",
            "from: literal",
            "from: conjur",
            "services.service_requiring_basic_auth.credentials.address.from: "
            "the 'conjur' provider is not supported by trustwire",
        ),
        # the integration test's `credentialPatterns`, which Secretless silently ignores
        (
            "connector_integration.yml",
            "credentialValidations",
            "credentialPatterns",
            "services.basic_auth_http.config: unknown key 'credentialPatterns' "
            "(did you mean credentialValidations?)",
        ),
    ],
)
def test_original_spelling_is_refused_precisely(
    fixture: str, old: str, new: str, message: str
) -> None:
    text = (FIXTURES / fixture).read_text(encoding="utf-8")
    assert old in text
    with pytest.raises(ConfigurationError) as caught:
        parse_config(text.replace(old, new), source=fixture)
    assert message in str(caught.value)


def test_authenticate_urls_as_a_single_string_as_secretless_accepts() -> None:
    # pkg/secretless/config/v2/config_http_test.go: "accepts a single string"
    text = textwrap.dedent(
        """\
        version: 2
        services:
          s:
            connector: generic_http
            listenOn: tcp://127.0.0.1:8080
            credentials: {token: t}
            config:
              headers: {Authorization: "Bearer {{ .token }}"}
              authenticateURLsMatching: ".*"
        """
    )
    patterns = parse_config(text).services["s"].http.authenticate_urls
    assert [p.pattern for p in patterns] == [".*"]
    # ... and refuses a non-string entry or a scalar of another type, as Secretless does
    for bad in ("[true, meow]", "false"):
        with pytest.raises(ConfigurationError, match="authenticateURLsMatching"):
            parse_config(text.replace('".*"', bad))
