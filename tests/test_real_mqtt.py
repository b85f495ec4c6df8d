"""Layer 5: real node processes talking through a Mosquitto broker over TLS.

The broker is private to the test: started from the `mosquitto.conf` that `keys init` wrote
(TLS with client certificates, per-party passwords, the inbox ACL, no anonymous clients) on
a free loopback port, and stopped at the end. It needs the `mosquitto` binary (`apt-get
install mosquitto`); without it the test is skipped, except under CI (`CI` set, as `.ci/run`
sets it), where a missing broker is a failure: CI must not pass by testing nothing.
Thin on purpose: a 4-node cluster commits requests over MQTT, and a backup killed with
SIGKILL restarts from disk and catches up to the same state. What the broker refuses is in
tests/test_tls.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import realnet
from realnet import load, poll, real_cluster, require_mosquitto, statuses, wait_ready

from node.netdir import NetworkDir
from node.transport.mqtt import BrokerSettings


def _caught_up(net: NetworkDir, ids: list[str]) -> dict[str, Any] | None:
    rows = statuses(net)
    if set(rows) == set(ids) and len({rows[i]["last_executed"] for i in ids}) == 1:
        return rows
    return None


@pytest.mark.real
@pytest.mark.slow
def test_four_nodes_commit_over_mqtt_and_a_killed_backup_catches_up(tmp_path: Path) -> None:
    require_mosquitto()
    with real_cluster(tmp_path, "mqtt") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        first = load(net, "mqtt", seconds=1.0)
        assert first.summary["requests"]["committed"] >= 5
        assert first.summary["liveness"]["ok"] and first.summary["safety"]["ok"]
        rows = statuses(net)
        assert all(r["peers"]["broker"]["connected"] for r in rows.values())
        assert net.tls and cluster.broker_proc is not None
        assert all(r["peers"]["broker"]["address"].startswith("mqtts://") for r in rows.values())

        backup = ids[3]
        cluster.kill(backup)
        during = load(net, "mqtt", seconds=1.0)
        assert during.summary["requests"]["committed"] >= 5
        cluster.start(backup)
        wait_ready(cluster, [backup])
        rows = poll(lambda: _caught_up(net, ids), 20, "the restarted backup to catch up")
        assert rows[backup]["recovered_from_disk"] is True
        assert len({rows[i]["digest"] for i in ids}) == 1


def test_broker_urls() -> None:
    b = BrokerSettings.from_url("mqtts://alice:s%40cret@broker.example:8884", qos=1)
    assert (b.host, b.port, b.tls, b.username, b.password, b.qos) == (
        "broker.example", 8884, True, "alice", "s@cret", 1)
    assert b.describe() == "mqtts://broker.example:8884"
    assert BrokerSettings.from_url("127.0.0.1").port == 1883
    assert BrokerSettings.from_url("mqtts://h").port == 8883
    with pytest.raises(ValueError, match="mqtt://"):
        BrokerSettings.from_url("http://h")


def test_a_missing_broker_skips_outside_ci_and_fails_in_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnet.cluster, "mosquitto_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Mosquitto"):
        require_mosquitto()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        require_mosquitto()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set, so a missing broker fails"):
        require_mosquitto()
    monkeypatch.setattr(realnet.cluster, "mosquitto_binary", lambda: "/usr/sbin/mosquitto")
    require_mosquitto()  # a broker: neither
