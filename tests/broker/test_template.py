"""The Go text/template subset used by header and query-parameter templates."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustwire.broker.template import MAX_DEPTH, MAX_OUTPUT_BYTES, MAX_TEMPLATE_BYTES, Template
from trustwire.errors import BrokerError, ConfigurationError

WHERE = "secretless.yml: services.my-api.config.headers.Authorization"
VALUES = {"user": "Jonah", "password": "secret", "token": "tok-123", "name": "Foo Bar"}


def render(text: str, values: dict[str, str] | None = None) -> str:
    return Template.parse(text, where=WHERE).render(VALUES if values is None else values)


def parse_error(text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        Template.parse(text, where=WHERE)
    return str(caught.value)


# -- rendering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("Bearer {{ .token }}", "Bearer tok-123"),
        ("{{.token}}", "tok-123"),
        ("{{ .user }} - {{ .password }}", "Jonah - secret"),
        # Secretless's own test vectors (generic connector config_test.go)
        ('Basic {{ printf "%s:%s" .user .password | base64 }}', "Basic Sm9uYWg6c2VjcmV0"),
        ("{{ .token | base64 }}", base64.b64encode(b"tok-123").decode()),
        ("{{ base64 .user }}", "Sm9uYWg="),
        ('{{ printf "%s" .name }}', "Foo Bar"),
        ('{{ printf "%v|%d|%%" .user 42 }}', "Jonah|42|%"),
        ('{{ printf "%s=%s" "k" .token }}', "k=tok-123"),
        ('{{ .token | printf "id:%s" }}', "id:tok-123"),
        ('{{ "lit" | printf "%s-%s" .user }}', "Jonah-lit"),
        ("{{ `raw \\n` }}", "raw \\n"),
        ('{{ "a\\tb\\u00e9\\x41\\101\\"" }}', 'a\tbéAA"'),
        ("{{ 42 }}", "42"),
        ("{{ -7 }}", "-7"),
        ('{{ print "a" "b" }}', "ab"),
        ("{{ print 1 2 }}", "1 2"),
        ('{{ print "a" 1 2 "b" }}', "a1 2b"),
        ("{{ print }}", ""),
        ('{{ urlquery "a b&c=d/é~" }}', "a+b%26c%3Dd%2F%C3%A9~"),
        ("{{ .name | urlquery }}", "Foo+Bar"),
        ('{{ printf "%s" (printf "%s:%s" .user .password | base64) }}', "Sm9uYWg6c2VjcmV0"),
        ("{{ (.token) }}", "tok-123"),
        ("{{ ((.user | base64)) }}", "Sm9uYWg="),
        ("{{ print (base64 .user) (print 1) }}", "Sm9uYWg=1"),
        # whitespace trimming: "{{- " and " -}}" trim spaces, tabs, CR and LF
        ("a \t\n {{- .user -}} \n b", "aJonahb"),
        ("a {{- .user }} b", "aJonah b"),
        ("a {{ .user -}} b", "a Jonahb"),
        ("{{-3}}", "-3"),  # no space after the dash: a negative number, not a trim marker
        # comments
        ("a{{/* note */}}b", "ab"),
        ("a {{- /* note */ -}} b", "ab"),
        ("{{/* multi\nline */}}x", "x"),
        # newlines inside an action are white space
        ('{{ printf\n  "%s"\n  .user }}', "Jonah"),
        ("{{`a\r\nb`}}", "a\nb"),  # Go drops carriage returns from raw strings
        ("}} alone {", "}} alone {"),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("tab\there\nnl\r\a\b\f\v", '"tab\\there\\nnl\\r\\a\\b\\f\\v"'),
        ("\x01\x7f", '"\\x01\\x7f"'),
        ("é😀", '"é😀"'),  # printable characters stay as they are
        ("\u00a0\u200b", '"\\u00a0\\u200b"'),  # non-printable spaces and format characters
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_printf_q_quotes_like_go_strconv_quote(value: str, expected: str) -> None:
    assert render('{{ printf "%q" .v }}', {"v": value}) == expected


def test_base64_encodes_the_utf8_bytes() -> None:
    assert render("{{ .v | base64 }}", {"v": "é"}) == base64.b64encode("é".encode()).decode()


def test_variables_are_the_credentials_referred_to() -> None:
    template = Template.parse(
        '{{ printf "%s:%s" .user .password | base64 }} {{ .user }} {{/* .not */}} {{ "x" }}',
        where=WHERE,
    )
    assert template.variables() == frozenset({"user", "password"})
    assert Template.parse("no actions", where=WHERE).variables() == frozenset()


def test_equal_texts_make_equal_templates() -> None:
    first = Template.parse("{{ .a }}", where="one")
    assert first == Template.parse("{{ .a }}", where="two")
    assert first != Template.parse("{{ .b }}", where="one")
    assert hash(first) == hash(Template.parse("{{ .a }}", where="two"))
    assert "{{ .a }}" in repr(first)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ .token | b64 }}", "unknown function 'b64'"),
        ("{{ if .token }}x{{ end }}", "'if' actions are not supported"),
        ("{{ range .token }}", "'range' actions are not supported"),
        ('{{ index . "a" }}', "'.' (the whole credential map) cannot be used"),
        ("{{ len .token }}", "function 'len' is not supported"),
        ("{{ println .token }}", "function 'println' is not supported"),
        ("{{ html .token }}", "function 'html' is not supported"),
        ("{{ true }}", "the constant 'true' is not supported"),
        ("{{ $x := .token }}", "variables are not supported"),
        ("{{ .a.b }}", "nested field '.a.b' is not supported"),
        ("{{ . }}", "'.' (the whole credential map) cannot be used"),
        ("{{ .token", "unclosed action"),
        ("{{ .token }", "unexpected '}' in action"),
        ("{{ }}", "missing value for command"),
        ("{{ .token | }}", "missing value for command"),
        ("{{ | base64 }}", "missing value for command"),
        ('{{ "abc }}', "unterminated quoted string"),
        ('{{ "a\nb" }}', "unterminated quoted string"),
        ("{{ `abc }}", "unterminated raw quoted string"),
        ('{{ "\\q" }}', "unknown escape sequence \\q"),
        ('{{ "\\x4" }}', "invalid escape \\x"),
        ('{{ "\\xff" }}', "byte escapes above \\x7f are not supported"),
        ('{{ "\\ud800" }}', "is not a valid character"),
        ('{{ "\\\'" }}', "unknown escape sequence"),
        ("{{ 'a' }}", "character constants are not supported"),
        ("{{ 0x1F }}", "only decimal integer constants are supported"),
        ("{{ 1.5 }}", "only decimal integer constants are supported"),
        ("{{ 012 }}", "only decimal integer constants are supported"),
        ('{{ printf "%x" .token }}', "printf verb '%x' is not supported"),
        ('{{ printf "%5s" .token }}', "printf verb '%5' is not supported"),
        ('{{ printf "100%" }}', "printf verb '%' is not supported"),
        ('{{ printf "%s:%s" .user }}', "printf format has 2 verb(s) but 1 argument(s)"),
        ('{{ printf "%s" .user .password }}', "printf format has 1 verb(s) but 2 argument(s)"),
        ('{{ printf "%d" .user }}', "printf %d (argument 1) needs an integer"),
        ('{{ printf "%s" 5 }}', "printf %s (argument 1) needs a string"),
        ('{{ printf "%q" 5 }}', "printf %q (argument 1) needs a string"),
        ("{{ printf .user }}", "printf's format must be a string constant"),
        ("{{ printf }}", "printf needs a format string"),
        ("{{ base64 }}", "base64 takes 1 argument, not 0"),
        ("{{ base64 .user .password }}", "base64 takes 1 argument, not 2"),
        ("{{ .user | base64 .password }}", "base64 takes 1 argument, not 2"),
        ("{{ base64 7 }}", "base64 takes a string, not an integer"),
        ('{{ "a" "b" }}', "is not a function but has arguments"),
        ("{{ .user .password }}", "is not a function but has arguments"),
        ('{{ .user | "x" }}', "cannot pipe into '\"x\"'"),
        ("{{ .user | .password }}", "cannot pipe into '.password'"),
        ('{{ printf"%s" .user }}', "missing space before"),
        ("{{ (.user }}", "unclosed left parenthesis"),
        ("{{ .user) }}", "unexpected ')' in action"),
        ("{{ .user-}}", "unexpected '-' in action"),
        ("{{ @ }}", "unexpected '@' in action"),
        ("{{/* never closed }}", "unclosed comment"),
        ("{{/* c */ .user }}", "comment ends before closing delimiter"),
    ],
)
def test_parse_errors_name_where_and_the_problem(text: str, message: str) -> None:
    error = parse_error(text)
    assert error.startswith(WHERE + ": ")
    assert message in error


def test_parse_error_reports_the_character_offset() -> None:
    assert "(at character 16 of the template)" in parse_error("Bearer {{ .t | b64 }}")


def test_parse_refuses_text_over_the_limit() -> None:
    Template.parse("x" * MAX_TEMPLATE_BYTES, where=WHERE)
    assert "longer than" in parse_error("x" * (MAX_TEMPLATE_BYTES + 1))
    # the limit is in UTF-8 bytes, not characters
    assert "longer than" in parse_error("é" * (MAX_TEMPLATE_BYTES // 2 + 1))


def test_parse_refuses_deep_parentheses() -> None:
    nested = "(" * MAX_DEPTH + ".user" + ")" * MAX_DEPTH
    assert render("{{ " + nested + " }}") == "Jonah"
    deeper = "(" * (MAX_DEPTH + 1) + ".user" + ")" * (MAX_DEPTH + 1)
    assert "nested deeper than" in parse_error("{{ " + deeper + " }}")


def test_render_names_the_missing_variable_and_no_value() -> None:
    template = Template.parse("{{ .user }}:{{ .password }}", where=WHERE)
    with pytest.raises(BrokerError) as caught:
        template.render({"user": "visible-secret-value"})
    message = str(caught.value)
    assert "'password'" in message
    assert WHERE in message
    assert "visible-secret-value" not in message


def test_render_refuses_output_over_the_limit() -> None:
    template = Template.parse("{{ .a }}{{ .a }}", where=WHERE)
    assert len(template.render({"a": "x" * (MAX_OUTPUT_BYTES // 2)})) == MAX_OUTPUT_BYTES
    with pytest.raises(BrokerError, match="longer than"):
        template.render({"a": "x" * (MAX_OUTPUT_BYTES // 2 + 1)})


def test_a_chain_of_base64_cannot_blow_up_memory() -> None:
    template = Template.parse("{{ .a" + " | base64" * 200 + " }}", where=WHERE)
    with pytest.raises(BrokerError, match="longer than"):
        template.render({"a": "x" * 1000})


def test_printf_cannot_build_an_oversized_intermediate_value() -> None:
    template = Template.parse('{{ printf "%s%s%s%s" .a .a .a .a | base64 }}', where=WHERE)
    with pytest.raises(BrokerError, match="longer than"):
        template.render({"a": "y" * (MAX_OUTPUT_BYTES // 2)})


# -- properties -------------------------------------------------------------------------

_ACTIONISH = st.text(
    alphabet=st.sampled_from(list("{}-|().\" `\\%$/*abs64ptrinfqd0123 \n\t:='@é")),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), _ACTIONISH, _ACTIONISH.map(lambda s: "{{" + s + "}}")))
def test_parse_raises_only_configuration_error(text: str) -> None:
    try:
        template = Template.parse(text, where=WHERE)
    except ConfigurationError as exc:
        assert str(exc).startswith(WHERE)
        return
    # Whatever parses renders, given every variable, or fails only with BrokerError.
    try:
        template.render(dict.fromkeys(template.variables(), "v"))
    except BrokerError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300).filter(lambda s: "{{" not in s))
def test_text_without_actions_renders_unchanged(text: str) -> None:
    assert Template.parse(text, where=WHERE).render({}) == text


_VALUE = st.text(st.characters(codec="utf-8"), min_size=0, max_size=100)


@settings(max_examples=200, deadline=None)
@given(_VALUE, _VALUE)
def test_basic_auth_pipeline_matches_an_independent_encoder(user: str, password: str) -> None:
    rendered = render('Basic {{ printf "%s:%s" .u .p | base64 }}', {"u": user, "p": password})
    assert rendered == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@settings(max_examples=200, deadline=None)
@given(_VALUE)
def test_field_and_urlquery_render_the_value(value: str) -> None:
    assert render("<{{ .v }}>", {"v": value}) == f"<{value}>"
    assert render("{{ urlquery .v }}", {"v": value}) == urllib.parse.quote_plus(value, safe="")
