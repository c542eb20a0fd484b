"""Where a Redis is, read from one URL: one server, a primary watched by Sentinel, or a Cluster.

    redis://[[user]:password@]host[:port][/db]        one server (rediss:// over TLS)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]
    sentinel://...                                    the same, as Celery spells it
    redis+cluster://[[user]:password@]host:port[,host:port...]

The user and password are the data servers' (the primary and its replicas, or the
cluster's nodes); the sentinels themselves are asked without a password. A cluster can
hold the job store and cache (CUTFX_STORE_URL) but not the broker: Celery's Redis
transport needs one server, or one primary behind Sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel, SentinelConnectionPool

from shared.errors import InvalidRedisUrl

DEFAULT_REDIS_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
CLUSTER_SCHEME = "redis+cluster"
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: How long a question to one sentinel may take before the next one is asked.
SENTINEL_SOCKET_TIMEOUT_S = 1.0


class Topology(StrEnum):
    SERVER = "server"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class RedisLocation:
    url: str
    topology: Topology
    #: The sentinels or the cluster's seed nodes; empty for one server (the URL says).
    hosts: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def auth(self) -> dict[str, Any]:
        given = {"username": self.username, "password": self.password}
        return {name: value for name, value in given.items() if value}


def parse_redis_url(url: str) -> RedisLocation:
    scheme = url.partition("://")[0].lower()
    if scheme in SERVER_SCHEMES:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # ValueError if malformed
        return RedisLocation(url, Topology.SERVER)
    if scheme in SENTINEL_SCHEMES:
        return _parse_hosts_url(url, Topology.SENTINEL, DEFAULT_SENTINEL_PORT)
    if scheme == CLUSTER_SCHEME:
        return _parse_hosts_url(url, Topology.CLUSTER, DEFAULT_REDIS_PORT)
    known = ", ".join(f"{name}://" for name in (*SERVER_SCHEMES, *SENTINEL_SCHEMES, CLUSTER_SCHEME))
    raise InvalidRedisUrl(f"a Redis URL starts with one of {known}")


def _parse_hosts_url(url: str, topology: Topology, default_port: int) -> RedisLocation:
    # urlsplit reads one host; the host list sits between the userinfo and the path.
    parts = urlsplit(url)
    userinfo, _, host_list = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = tuple(_host_port(item, default_port) for item in host_list.split(",") if item)
    if not hosts:
        raise InvalidRedisUrl(f"{parts.scheme}:// needs at least one host:port")
    path = [segment for segment in parts.path.split("/") if segment]
    master_name, db = "", 0
    if topology is Topology.SENTINEL:
        if not path:
            raise InvalidRedisUrl("a Sentinel URL names its primary: .../master-name[/db]")
        master_name, path = unquote(path[0]), path[1:]
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise InvalidRedisUrl(f"the database of a {topology} URL is a number: /0")
    if path:
        db = int(path[0])
    if topology is Topology.CLUSTER and db:
        raise InvalidRedisUrl("a Redis Cluster has database 0 only")
    return RedisLocation(
        url,
        topology,
        hosts=hosts,
        master_name=master_name,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host or (port and not port.isdigit()):
        raise InvalidRedisUrl(f"not a host:port: {item!r}")
    return host.strip("[]"), int(port) if port else default_port


class SentinelBlockingConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's primary discovery with a bounded pool whose callers wait for a free
    connection, as the API's plain-Redis pool does."""


def redis_client(
    url: str, *, max_connections: int | None = None, pool_wait_s: float = 5, **options: Any
) -> redis.Redis:
    """A client for the Redis at `url`; with `max_connections`, callers past it wait up to
    `pool_wait_s` for a connection. `options` are redis-py's connection options."""
    location = parse_redis_url(url)
    if location.topology is Topology.SERVER:
        if max_connections is None:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_wait_s, **options
        )
        return redis.Redis(connection_pool=pool)
    if location.topology is Topology.SENTINEL:
        return _sentinel_primary(location, max_connections, pool_wait_s, options)
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in location.hosts],  # type: ignore[no-untyped-call]
        max_connections=max_connections or 2**31,
        **location.auth,
        **options,
    )
    # RedisCluster is not a redis.Redis, but it answers every command the job store,
    # cache, heartbeats and metrics send (each keeps a script's keys in one slot);
    # tests/shared/test_redis_cluster.py runs them against a real cluster.
    return cast(redis.Redis, cluster)


def _sentinel_primary(
    location: RedisLocation,
    max_connections: int | None,
    pool_wait_s: float,
    options: dict[str, Any],
) -> redis.Redis:
    sentinel_options = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S}
    sentinel = Sentinel(list(location.hosts), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    pool_options: dict[str, Any] = {}
    if max_connections is not None:
        pool_options = {
            "connection_pool_class": SentinelBlockingConnectionPool,
            "max_connections": max_connections,
            "timeout": pool_wait_s,
        }
    return sentinel.master_for(  # type: ignore[no-untyped-call,no-any-return]
        location.master_name, db=location.db, **location.auth, **pool_options, **options
    )


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL for `url` and the transport options it needs besides."""
    location = parse_redis_url(url)
    if location.topology is Topology.SERVER:
        return url, {}
    if location.topology is Topology.CLUSTER:
        raise InvalidRedisUrl(
            "the broker cannot be a Redis Cluster: give CUTFX_REDIS_URL one server or a "
            "Sentinel URL, and the cluster as CUTFX_STORE_URL"
        )
    userinfo = _userinfo(location)
    urls = [
        f"sentinel://{userinfo}{_netloc(host, port)}/{location.db}" for host, port in location.hosts
    ]
    options = {
        "master_name": location.master_name,
        "sentinel_kwargs": {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S},
    }
    return ";".join(urls), options


def limits_storage(url: str) -> tuple[str, dict[str, Any]]:
    """The rate-limit library's storage URI for `url` and the options it needs besides."""
    location = parse_redis_url(url)
    if location.topology is Topology.SERVER:
        return url, {}
    hosts = ",".join(_netloc(host, port) for host, port in location.hosts)
    if location.topology is Topology.CLUSTER:
        return f"redis+cluster://{_userinfo(location)}{hosts}", {}
    options: dict[str, Any] = {"db": location.db, **location.auth}
    return f"redis+sentinel://{hosts}/{quote(location.master_name)}", options


def _userinfo(location: RedisLocation) -> str:
    if not location.password:
        return ""
    return f"{quote(location.username or '')}:{quote(location.password)}@"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
