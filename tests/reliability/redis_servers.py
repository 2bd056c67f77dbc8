"""Redis deployments past one node that a test starts, owns and breaks (beside ``servers``):
a Redis Cluster of three primaries, and a primary with one replica watched by one Sentinel
(quorum 1), which the test fails over. All on loopback ports of their own; the shared servers
are never touched."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.reliability.servers import START_TIMEOUT_S, _pings, _until, free_port

#: Data nodes keep nothing on disk: these tests fail over, they never restart a node.
_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
#: ms without an answer before a Cluster node or the Sentinel's primary counts as down.
NODE_TIMEOUT_MS = 2000


def _redis_server(
    directory: Path, port: int, *options: str, sentinel_conf: Path | None = None
) -> subprocess.Popen[bytes]:
    """A ``redis-server`` (a Sentinel given its config) on ``port``, files in ``directory``;
    returns once it answers PING."""
    argv = ["redis-server"] + ([str(sentinel_conf), "--sentinel"] if sentinel_conf else [])
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--logfile", str(directory / f"redis-{port}.log"), *options]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)

    def up() -> bool:
        if proc.poll() is not None:
            log = directory / f"redis-{port}.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"redis-server on {port} exited {proc.returncode}: {tail}")
        return _pings(client)

    _until(up, f"redis-server on {port}")
    return proc


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@dataclass
class OwnCluster:
    """Three Cluster primaries, no replicas, every slot assigned."""

    directory: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node, ``;``-separated (REDIS_URL with ``SYNCGUARD_REDIS_CLUSTER=1``)."""
        return ";".join(f"redis://127.0.0.1:{p}/0" for p in self.ports)

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (its own keys only)."""
        return redis.Redis(port=port, socket_timeout=5)

    def start(self) -> None:
        """Start the nodes, join them with ``redis-cli --cluster create``, wait for state ok."""
        for port in self.ports:
            conf = str(self.directory / f"nodes-{port}.conf")
            # The bus port too is a free one (the default, port + 10000, may be taken or > 65535).
            options = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            options += ["--cluster-config-file", conf]
            options += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), *_NO_PERSISTENCE]
            self.procs.append(_redis_server(self.directory, port, *options))
        argv = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(argv, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        _until(self._ok, "the cluster's state ok on every node")

    def _ok(self) -> bool:
        for port in self.ports:
            info = self.node(port).cluster("INFO")
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) < 3:
                return False
        return True


@contextmanager
def own_cluster() -> Iterator[OwnCluster]:
    """A fresh three-primary Cluster in a temporary directory, killed and removed at the end."""
    server = OwnCluster(Path(tempfile.mkdtemp(prefix="fault-cluster-")))
    try:
        server.start()
        yield server
    finally:
        _kill(server.procs)
        shutil.rmtree(server.directory, ignore_errors=True)


@dataclass
class OwnSentinel:
    """A primary, its replica and one Sentinel monitoring them as ``master`` (quorum 1)."""

    directory: Path
    master: str = "fault-primary"
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(2)])
    sentinel_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The Sentinel (REDIS_URL / BROKER_URL with ``SYNCGUARD_REDIS_SENTINEL_MASTER``)."""
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def sentinel(self) -> redis.Redis:
        """A client of the Sentinel itself."""
        return redis.Redis(port=self.sentinel_port, socket_timeout=5, decode_responses=True)

    def primary_port(self) -> int:
        """The port the Sentinel names as the primary now."""
        reply = self.sentinel().execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master
        )
        return int(reply[1])

    def start(self) -> None:
        """Start primary, replica (in sync) and Sentinel; wait until it sees the replica."""
        primary, replica = self.ports
        self.procs.append(_redis_server(self.directory, primary, *_NO_PERSISTENCE))
        replica_of = ["--replicaof", "127.0.0.1", str(primary), *_NO_PERSISTENCE]
        self.procs.append(_redis_server(self.directory, replica, *replica_of))
        _until(lambda: self._link_up(replica), "the replica's link to its primary")
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor {self.master} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {self.master} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {self.master} 10000\n"
        )
        self.procs.append(_redis_server(self.directory, self.sentinel_port, sentinel_conf=conf))
        _until(self._replica_known, "the Sentinel's view of the replica")

    def _replica_known(self) -> bool:
        # Sentinel promotes only a replica it has read INFO from lately, its link up.
        replicas = self.sentinel().sentinel_slaves(self.master)
        return any(
            r.get("is_slave") and r.get("master-link-status") == "ok" and not r.get("is_sdown")
            for r in replicas
        )

    def _link_up(self, port: int) -> bool:
        info = redis.Redis(port=port, socket_timeout=5).info("replication")
        return bool(info.get("master_link_status") == "up")

    def failover(self) -> int:
        """``SENTINEL FAILOVER``: the replica promoted. Returns its port once the Sentinel names
        it and it acts as primary; the old primary keeps taking writes from clients still
        connected to it until the Sentinel demotes it (``demoted``), as in production."""
        old = self.primary_port()
        new = next(p for p in self.ports if p != old)
        _until(self._replica_known, "a replica the Sentinel can promote")
        self.sentinel().execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "FAILOVER", self.master
        )

        def promoted() -> bool:
            role = redis.Redis(port=new, socket_timeout=5).role()[0]
            return self.primary_port() == new and role in (b"master", "master")

        _until(promoted, f"the failover {old} -> {new}")
        return new

    def demoted(self, port: int) -> None:
        """Wait (bounded) until ``port`` replicates from the new primary."""
        _until(lambda: self._link_up(port), f"the old primary {port} demoted")


@contextmanager
def own_sentinel() -> Iterator[OwnSentinel]:
    """A fresh primary, replica and Sentinel in a temporary directory, killed at the end."""
    server = OwnSentinel(Path(tempfile.mkdtemp(prefix="fault-sentinel-")))
    try:
        server.start()
        yield server
    finally:
        _kill(server.procs)
        shutil.rmtree(server.directory, ignore_errors=True)
