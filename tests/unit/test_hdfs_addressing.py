"""NameService addressing without a cluster: the HA state probe and the order, over a fake HTTP client."""

from __future__ import annotations

import logging

import pytest
import requests

from metabackup.hdfs import (
    IS_ACTIVE, JMX_STATUS, PROBE_TIMEOUT, NoNameNode, active_first, active_namenode, namenode_state, namenode_urls,
    scheme_for,
)


class Reply:
    def __init__(self, status: int, body=None):
        self.status_code, self.body = status, body

    def json(self):
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


class FakeHttp:
    """``get(url, timeout=)`` answering from a table; an unknown URL is a refused connection."""

    def __init__(self, answers: dict[str, Reply]):
        self.answers, self.asked = answers, []

    def get(self, url: str, timeout=None):
        self.asked.append((url, timeout))
        if url not in self.answers:
            raise requests.ConnectionError(f"refused: {url}")
        return self.answers[url]


def test_is_active_answers_first_and_jmx_only_when_it_cannot():
    http = FakeHttp({"http://a:1" + IS_ACTIVE: Reply(200), "http://b:1" + IS_ACTIVE: Reply(405),
                     "http://c:1" + IS_ACTIVE: Reply(404),
                     "http://c:1" + JMX_STATUS: Reply(200, {"beans": [{"State": "observer"}]})})
    assert namenode_state("http://a:1/", http) == "active"
    assert namenode_state("http://b:1", http) == "standby"
    assert namenode_state("http://c:1", http) == "observer"
    assert ("http://a:1" + IS_ACTIVE, PROBE_TIMEOUT) in http.asked
    assert not any(url.startswith("http://a:1/jmx") or url.startswith("http://b:1/jmx") for url, _ in http.asked)


@pytest.mark.parametrize("answers", [
    {},                                                                      # refused
    {"http://x" + IS_ACTIVE: Reply(404), "http://x" + JMX_STATUS: Reply(500)},
    {"http://x" + IS_ACTIVE: Reply(404), "http://x" + JMX_STATUS: Reply(200, {"beans": []})},
    {"http://x" + IS_ACTIVE: Reply(404), "http://x" + JMX_STATUS: Reply(200, ValueError("not JSON"))},
])
def test_a_namenode_that_cannot_say_has_no_state(answers):
    assert namenode_state("http://x", FakeHttp(answers)) is None


def test_any_object_with_get_will_do():
    class Only:
        get = staticmethod(lambda url, timeout: Reply(200))

    assert namenode_state("http://a", Only()) == "active"


def test_the_active_namenode_comes_first_then_unknown_then_standby_then_unreachable(caplog):
    http = FakeHttp({"https://s:9871" + IS_ACTIVE: Reply(405), "https://a:9871" + IS_ACTIVE: Reply(200),
                     "https://o:7" + IS_ACTIVE: Reply(404),
                     "https://o:7" + JMX_STATUS: Reply(200, {"beans": [{"State": "initializing"}]})})
    with caplog.at_level(logging.INFO, logger="metabackup.hdfs"):
        urls = namenode_urls("down:1, s,a,o:7", 9871, {"use_ssl": "True"}, http=http, label="webhdfs_ns1")
    assert urls == ["https://a:9871", "https://o:7", "https://s:9871", "https://down:1"]
    assert "NameNodes of webhdfs_ns1: https://down:1 unreachable, https://s:9871 standby" in caplog.text


def test_ties_keep_the_connection_order():
    assert active_first(["b", "a", "c"], {"a": "standby", "b": "standby", "c": None}) == ["b", "a", "c"]


@pytest.mark.parametrize("extra, scheme", [({}, "http"), ({"use_ssl": True}, "https"), ({"use_ssl": "true"}, "https"),
                                           ({"use_ssl": "True"}, "https"), ({"use_ssl": "no"}, "http"),
                                           ({"use_ssl": False}, "http")])
def test_use_ssl_selects_https(extra, scheme):
    assert scheme_for(extra) == scheme


def test_a_connection_naming_no_namenode_is_refused():
    with pytest.raises(NoNameNode, match="connection 'webhdfs_x' names no NameNode in its host field"):
        namenode_urls(" , ", 9870, label="webhdfs_x", http=FakeHttp({}))


def test_the_active_namenode_is_the_one_that_says_so():
    http = FakeHttp({"http://a:1" + IS_ACTIVE: Reply(405), "http://b:1" + IS_ACTIVE: Reply(200)})
    assert active_namenode(["http://down:1", "http://a:1", "http://b:1"], http) == "http://b:1"
    assert active_namenode(["http://down:1", "http://a:1"], http) is None
