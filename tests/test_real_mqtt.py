"""Layer 5: real node processes talking through the Mosquitto broker on 127.0.0.1:1883.

`.ci/run` starts a broker when none is listening; elsewhere `apt-get install mosquitto`.
Thin on purpose: a 4-node cluster commits requests over MQTT, and a backup killed with
SIGKILL restarts from disk and catches up to the same state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from realnet import broker_listening, load, poll, real_cluster, statuses, wait_ready

from node.netdir import NetworkDir
from node.transport.mqtt import BrokerSettings

needs_broker = pytest.mark.skipif(not broker_listening(),
                                  reason="no MQTT broker on 127.0.0.1:1883 (.ci/run starts one)")


def _caught_up(net: NetworkDir, ids: list[str]) -> dict[str, Any] | None:
    rows = statuses(net)
    if set(rows) == set(ids) and len({rows[i]["last_executed"] for i in ids}) == 1:
        return rows
    return None


@needs_broker
def test_four_nodes_commit_over_mqtt_and_a_killed_backup_catches_up(tmp_path: Path) -> None:
    with real_cluster(tmp_path, "mqtt") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        first = load(net, "mqtt", seconds=1.0)
        assert first.summary["requests"]["committed"] >= 5
        assert first.summary["liveness"]["ok"] and first.summary["safety"]["ok"]
        assert all(r["peers"]["broker"]["connected"] for r in statuses(net).values())

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
