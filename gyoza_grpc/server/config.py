"""Server settings from flags and environment, validated once.

The defaults live here, not in the modules that use them: the command line reads them to
build its flags, and importing this module must stay cheap (no SQLAlchemy, no database
driver) so the client commands start fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gyoza_grpc.domain.access import ApiKeys
from gyoza_grpc.domain.limits import DEFAULT_LIMITS, Limits

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///gyoza.db"
# SQLite's synchronous setting (store/engine.py): through a process crash, or a machine crash.
SQLITE_SYNCHRONOUS = ("normal", "full")
# Quiet interval after which an idle watch stream gets a heartbeat.
DEFAULT_HEARTBEAT_S = 15.0
# PostgreSQL replicas: how often watched keys are checked against the tables.
DEFAULT_CATCHUP_S = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str = DEFAULT_DATABASE_URL
    # Quiet interval after which an idle watch stream gets a heartbeat.
    watch_heartbeat_s: float = DEFAULT_HEARTBEAT_S
    # How long unary calls may finish after SIGTERM before they are cut off.
    shutdown_grace_s: float = 5.0
    db_pool_size: int = 10
    # SQLite: "normal" (a commit survives a crash of the process) or "full" (and of the
    # machine: an fsync per commit).
    sqlite_synchronous: str = "normal"
    # A worker that has not heartbeated for this long is evicted (and its runs handed back).
    lease_seconds: int = 30
    # How often expired leases are looked for: detection takes at most lease + interval. At
    # most a quarter of the lease (the sweeps are also the clock that tells a database outage).
    sweep_interval_s: float = 5.0
    migrate: bool = False
    # PostgreSQL: a statement running longer is cut off (and answered UNAVAILABLE); 0 = none.
    db_statement_timeout_s: float = 0.0
    # PostgreSQL replicas: how often watched runs/topics and claim waiters are checked against
    # the tables (bounds the delay a lost NOTIFY causes).
    catchup_interval_s: float = DEFAULT_CATCHUP_S
    # No keys: the server is open (and says so at start). See gyoza_grpc/server/api/auth.py.
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    reflection: bool = True
    # PEM files: TLS when tls_cert and tls_key are set; mutual TLS with tls_client_ca.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key or self.tls_client_ca)

    # Message size, JSON size, events per run and watch stream caps (domain/limits.py).
    limits: Limits = DEFAULT_LIMITS
    # Prometheus /metrics on this port (0: a free one); None: no metrics.
    metrics_port: int | None = None
    # How often the store gauges (runs by state, queue, workers) are re-read.
    metrics_refresh_s: float = 5.0
    # How often the database is pinged; health is NOT_SERVING while it cannot be reached.
    db_health_interval_s: float = 3.0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"
