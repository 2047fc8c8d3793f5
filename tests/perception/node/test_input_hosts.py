"""perception.node.input_hosts: a tcp input whose host does not resolve is logged on change and
noted, looked up off the receiver's thread."""

from __future__ import annotations

import logging

import pytest

from perception.node.input_hosts import InputHosts

BAD = "tcp://lidr-host:2368"
GOOD = "tcp://127.0.0.1:2368"


def test_a_host_that_stops_and_starts_resolving_is_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = {"lidr-host": False}

    def lookup(endpoint: str) -> str | None:
        if endpoint == BAD and not names["lidr-host"]:
            return "host 'lidr-host' does not resolve (Name or service not known)"
        return None

    hosts = InputHosts([BAD, GOOD, "ipc:///tmp/x", BAD], lookup=lookup)
    with caplog.at_level(logging.WARNING, logger="perception.node"):
        hosts.check()
        hosts.check()  # no change: nothing more logged
        assert hosts.notes() == (
            f"input {BAD}: host 'lidr-host' does not resolve (Name or service not known); "
            "nothing can arrive from it until it resolves",
        )
        names["lidr-host"] = True
        hosts.check()
        hosts.check()
    assert hosts.notes() == ()
    assert [r.getMessage() for r in caplog.records] == [
        f"input {BAD}: host 'lidr-host' does not resolve (Name or service not known); "
        "ZeroMQ keeps trying it",
        f"input {BAD}: its host resolves now",
    ]


def test_only_tcp_endpoints_are_looked_up() -> None:
    looked: list[str] = []

    def lookup(endpoint: str) -> str | None:
        looked.append(endpoint)
        return None

    with InputHosts(["ipc:///tmp/a", "inproc://b"], lookup=lookup).start() as hosts:
        assert hosts.wait_checked(0.0)  # nothing to look up: checked at once, no thread
    assert looked == []


def test_the_real_resolver_on_its_own_thread() -> None:
    """.invalid never resolves (RFC 2606); the look-up runs on the watch's thread."""
    with InputHosts(["tcp://no-such-host.invalid:2368", GOOD]).start() as hosts:
        assert hosts.wait_checked(10.0)
        (note,) = hosts.notes()
    assert note.startswith(
        "input tcp://no-such-host.invalid:2368: host 'no-such-host.invalid' does not resolve ("
    )
