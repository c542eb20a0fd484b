"""Redis as production runs it, on loopback ports of the tests' own: a primary with a
replica behind three sentinels, and a three-node cluster. Every process here is started
and stopped by the tests; the machine's Redis on 6379 is never touched."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from cli.stack import free_port
from tests.faults import RedisServer

MASTER_NAME = "cutfx"
SENTINELS = 3
QUORUM = 2
#: How long a silent primary takes to be called down, and a failover at most.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
CLUSTER_NODES = 3
START_TIMEOUT_S = 30


def _wait_until(condition, timeout_s: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        time.sleep(0.1)
    raise TimeoutError(message)


class SentinelGroup:
    """A primary, one replica of it and three sentinels that watch it as MASTER_NAME."""

    def __init__(self, root: Path, first_port: int) -> None:
        self.root = root
        self.primary = RedisServer(root / "primary", first_port)
        self.replica = RedisServer(
            root / "replica",
            first_port + 1,
            ["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.sentinel_ports = [free_port(first_port + 10 + index) for index in range(SENTINELS)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        replica = redis.Redis(port=self.replica.port)
        _wait_until(
            lambda: replica.info("replication")["master_link_status"] == "up",
            START_TIMEOUT_S,
            "the replica did not sync",
        )
        for port in self.sentinel_ports:
            self.sentinels.append(self._start_sentinel(port))
        _wait_until(self._every_sentinel_knows_all, START_TIMEOUT_S, "sentinels did not meet")

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        folder = self.root / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # a sentinel rewrites its own file
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        log = (folder / "sentinel.log").open("ab")
        return subprocess.Popen(
            ["redis-server", str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )

    def _every_sentinel_knows_all(self) -> bool:
        for port in self.sentinel_ports:
            master: Any = redis.Redis(port=port, decode_responses=True).sentinel_master(MASTER_NAME)
            if master["num-other-sentinels"] < SENTINELS - 1 or master["num-slaves"] < 1:
                return False
        return True

    def primary_port(self) -> int:
        """The port the sentinels now name as the primary's."""
        sentinel = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        address: Any = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        _host, port = address
        return int(port)

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.replica.stop()
        self.primary.stop()


class LocalCluster:
    """Three cluster-enabled redis-servers that share the 16384 slots, no replicas."""

    def __init__(self, root: Path, first_port: int) -> None:
        self.nodes = []
        for index in range(CLUSTER_NODES):
            bus_port = free_port(first_port + 100 + index)
            self.nodes.append(
                RedisServer(
                    root / f"node-{index}",
                    first_port + index,
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        str(bus_port),
                    ],
                )
            )

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )  # fmt: skip
        _wait_until(self._every_node_ok, START_TIMEOUT_S, "the cluster did not form")

    def _every_node_ok(self) -> bool:
        for node in self.nodes:
            info = redis.Redis(port=node.port, decode_responses=True).execute_command(
                "CLUSTER", "INFO"
            )
            if "cluster_state:ok" not in str(info):
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
