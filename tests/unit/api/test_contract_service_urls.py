"""The Teams service URL allow-list (DIGEST_TEAMS_SERVICE_URLS): where the bot's token may be sent."""

from __future__ import annotations

import re

import pytest

from digest_api import contract
from digest_api.contract import check_service_url, parse_service_urls

DEFAULTS = parse_service_urls(None)


def test_the_defaults_are_the_documented_bot_framework_hosts_over_https() -> None:
    assert [str(rule) for rule in DEFAULTS] == [
        "https://smba.trafficmanager.net", "https://smba.infra.gcc.teams.microsoft.com",
        "https://smba.infra.gov.teams.microsoft.us", "https://smba.infra.dod.teams.microsoft.us",
        "https://*.botframework.com"]
    assert parse_service_urls("") == DEFAULTS == parse_service_urls(" default ")


@pytest.mark.parametrize("url", [
    "https://smba.trafficmanager.net/teams/",
    "https://smba.trafficmanager.net/emea/",
    "https://smba.trafficmanager.net:443/amer/",
    "https://SMBA.TrafficManager.net/teams/",
    "https://smba.infra.gcc.teams.microsoft.com/teams",
    "https://smba.infra.gov.teams.microsoft.us/teams",
    "https://smba.infra.dod.teams.microsoft.us/teams",
    "https://europe.directline.botframework.com/",
    "https://smba.trafficmanager.net",
])
def test_bot_framework_service_urls_are_allowed_by_default(url: str) -> None:
    assert check_service_url(url, DEFAULTS).allowed


@pytest.mark.parametrize(("url", "host"), [
    ("http://smba.trafficmanager.net/teams/", "smba.trafficmanager.net"),  # plain http
    ("https://evil.trafficmanager.net/", "evil.trafficmanager.net"),  # anyone can register one
    ("https://emea.smba.trafficmanager.net/", "emea.smba.trafficmanager.net"),
    ("https://smba.trafficmanager.net.evil.example/", "smba.trafficmanager.net.evil.example"),
    ("https://smba.trafficmanager.net@evil.example/", "evil.example"),  # user part: the host is evil.example
    ("https://smba.trafficmanager.net:8443/", "smba.trafficmanager.net"),  # another port
    ("https://botframework.com/", "botframework.com"),  # *.botframework.com: below it only
    ("https://notbotframework.com/", "notbotframework.com"),
    ("https://smba.trafficmanager.net./", "smba.trafficmanager.net."),  # trailing dot: not the same name here
    ("https://smba.traffic\tmanager.net/", "smba.trafficmanager.net"),  # urlsplit drops the tab, others may not
    ("https://169.254.169.254/metadata/", "169.254.169.254"),
    ("http://127.0.0.1:3978/", "127.0.0.1"),
    ("ftp://smba.trafficmanager.net/", "smba.trafficmanager.net"),
    ("https://[::1/", ""),  # unparsable
    ("smba.trafficmanager.net/teams", ""),  # no scheme
    ("", ""),
])
def test_other_urls_are_refused_naming_their_host(url: str, host: str) -> None:
    verdict = check_service_url(url, DEFAULTS)
    assert not verdict.allowed
    assert verdict.host == host


def test_origin_shown_to_operators_has_no_user_part() -> None:
    verdict = check_service_url("https://user:pa55@evil.example:8443/x?token=1", DEFAULTS)
    assert (verdict.allowed, verdict.origin) == (False, "https://evil.example:8443")


def test_explicit_entries_allow_scheme_host_port_and_path_prefix() -> None:
    rules = parse_service_urls("http://127.0.0.1:3978/, https://[::1]:8443/bot/, https://*.teams.example")
    assert [str(rule) for rule in rules] == ["http://127.0.0.1:3978", "https://[::1]:8443/bot",
                                             "https://*.teams.example"]
    allowed = ["http://127.0.0.1:3978/", "http://127.0.0.1:3978/v3/conversations", "https://[::1]:8443/bot",
               "https://[::1]:8443/bot/v3", "https://a.teams.example/", "https://a.b.teams.example:443/x"]
    refused = ["https://127.0.0.1:3978/", "http://127.0.0.1:3979/", "http://127.0.0.2:3978/",
               "https://[::1]:8443/botnet", "https://[::1]:8443/", "https://[::1]:8443/bot/../admin",
               "https://teams.example/", "http://a.teams.example/", "https://smba.trafficmanager.net/teams/"]
    assert [u for u in allowed if not check_service_url(u, rules).allowed] == []
    assert [u for u in refused if check_service_url(u, rules).allowed] == []


def test_default_keyword_adds_the_defaults_to_explicit_entries() -> None:
    rules = parse_service_urls("default,http://10.244.0.1:3978/")
    assert rules[:len(DEFAULTS)] == DEFAULTS and len(rules) == len(DEFAULTS) + 1
    assert check_service_url("http://10.244.0.1:3978/", rules).allowed
    assert check_service_url("https://smba.trafficmanager.net/teams/", rules).allowed


@pytest.mark.parametrize(("value", "problem"), [
    ("smba.trafficmanager.net", "entry 'smba.trafficmanager.net': expected scheme://host"),
    ("wss://x.example", "entry 'wss://x.example': expected scheme://host"),
    ("https://u@x.example", "no user, query or fragment"),
    ("https://x.example/?a=1", "no user, query or fragment"),
    ("https://x.example#f", "no user, query or fragment"),
    ("https://x.example:70000", "invalid port"),
    ("https://*.example", "invalid host"),  # a wildcard over a whole top-level domain
    ("https://*.10.0.0.1", "invalid host"),
    ("https://x_y.example", "invalid host"),
    ("https://", "invalid host"),
    ("https://x.example/a/../b", "invalid path"),
    ("default,http://ok.example,https://bad host", "entry 'https://bad host': invalid host"),
])
def test_bad_entries_are_named(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_service_urls(value)


def test_worker_config_parses_the_allow_list_and_names_a_bad_entry() -> None:
    from digest_worker.config import ConfigError, load

    base = {contract.SERVICEBUS_QUEUE: "q", contract.SERVICEBUS_NAMESPACE: "ns.servicebus.windows.net"}
    assert load(base).teams_service_urls == DEFAULTS
    assert [str(r) for r in load({**base, contract.TEAMS_SERVICE_URLS: "http://127.0.0.1:1/"}).teams_service_urls] == [
        "http://127.0.0.1:1"]
    with pytest.raises(ConfigError) as info:
        load({**base, contract.TEAMS_SERVICE_URLS: "127.0.0.1:1"})
    assert info.value.problems == [f"{contract.TEAMS_SERVICE_URLS}: entry '127.0.0.1:1': expected "
                                   "scheme://host[:port][/path] with scheme https or http"]


def test_spec_teams_service_urls_are_checked_by_the_same_parser() -> None:
    from digest_api.parse import SpecError, parse_pipeline
    from tests.support.samples import minimal

    body = minimal()
    body["spec"]["teams"]["serviceUrls"] = ["default", "http://10.244.0.1:3978/"]
    assert parse_pipeline(body).spec.teams.service_urls == ["default", "http://10.244.0.1:3978/"]
    assert parse_pipeline(minimal()).spec.teams.service_urls == []
    body["spec"]["teams"]["serviceUrls"] = ["default", "smba.trafficmanager.net"]
    with pytest.raises(SpecError, match=re.escape("spec.teams.serviceUrls[1]: expected scheme://host")):
        parse_pipeline(body)
