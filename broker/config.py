"""Every setting of a broker node, where it comes from, and whether it makes sense.

A node reads its settings once, at start, from four layers. Later layers win:

    defaults  <  TOML file (--config FILE)  <  environment (RAFTKA_<NAME>)  <  command line

Each setting is one field of the frozen `BrokerConfig`; the field's metadata carries its
help text and how to parse it from a string, so the command line, the environment, the
TOML loader, `settings_reference()` (the README's configuration table, the compose-file
test) and validation all come from that single list. Names carry their units
(`tick_ms`, `segment_bytes_max`).

Validation happens when a `BrokerConfig` is built, whatever the way, and fails with a
`ConfigError` that names the setting, the bad value and (when loaded) where it came from,
so a node with a bad setting stops at once instead of misbehaving later.

Listeners. The simple case is one Kafka listener: `listen` (bind address) and `advertise`
(what Metadata tells clients; defaults to `listen`). The Kafka-style extension names
several listeners, each with a bind and an advertised address:

    listeners            = "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092"
    advertised_listeners = "INTERNAL://raftka-1:9092,EXTERNAL://localhost:19092"

A client that connects to one listener is told the other brokers' addresses on the same
listener name (Kafka's rule), which is what makes compose-internal and host clients work
at once. `kafka_listeners()` returns the resolved list in both cases.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.failpoints import parse_failpoints

ENV_PREFIX = "RAFTKA_"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})
SIMPLE_LISTENER_NAME = "PLAINTEXT"
MiB = 1024 * 1024
_DAY_MS = 24 * 3600 * 1000
_INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent with another one."""

    def __init__(self, setting: str, value: object, reason: str, source: str = "") -> None:
        self.setting = setting
        self.value = value
        self.reason = reason
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"invalid setting {setting}={value!r}{where}: {reason}")

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.setting, self.value, self.reason, source)


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        return self.host in WILDCARD_HOSTS


@dataclass(frozen=True, slots=True)
class Peer:
    """A Raft voter: its node id and the address of its Raft listener."""

    node_id: int
    address: HostPort


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One `NAME://host:port` item of `listeners` or `advertised_listeners`."""

    name: str
    address: HostPort


@dataclass(frozen=True, slots=True)
class Listener:
    """A resolved Kafka listener: where it binds and what it tells clients."""

    name: str
    bind: HostPort
    advertised: HostPort


# ---------------------------------------------------------------------------------------
# Parsers: string (command line, environment, TOML strings) -> typed value.
# Each raises ValueError with a short reason; the loader wraps it into a ConfigError.


def parse_host_port(text: str) -> HostPort:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        host, sep, rest = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:PORT")
        port_text = rest
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
        if ":" in host:
            raise ValueError("an IPv6 host must be written in brackets: [::1]:9092")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return HostPort(host, port)


def parse_peers(text: str) -> tuple[Peer, ...]:
    peers = []
    for item in _split_list(text):
        id_text, sep, addr = item.partition("@")
        if not sep:
            raise ValueError(f"peer {item!r} is not ID@HOST:PORT")
        try:
            node_id = int(id_text)
        except ValueError:
            raise ValueError(f"peer {item!r} has a non-numeric node id") from None
        peers.append(Peer(node_id, parse_host_port(addr)))
    return tuple(peers)


def parse_listeners(text: str) -> tuple[ListenerSpec, ...]:
    specs = []
    for item in _split_list(text):
        name, sep, addr = item.partition("://")
        if not sep:
            raise ValueError(f"listener {item!r} is not NAME://HOST:PORT")
        specs.append(ListenerSpec(name.strip().upper(), parse_host_port(addr)))
    return tuple(specs)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def parse_int(text: str) -> int:
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise ValueError("expected an integer") from None


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# Kinds: how a string becomes the field's value.
_PARSERS: dict[str, Callable[[str], object]] = {
    "int": parse_int,
    "opt_int": lambda s: None if s.strip() == "" else parse_int(s),
    "bool": parse_bool,
    "str": lambda s: s,
    "hostport": parse_host_port,
    "opt_hostport": lambda s: None if s.strip() == "" else parse_host_port(s),
    "peers": parse_peers,
    "listeners": parse_listeners,
}


def _setting(default: Any, help_text: str, kind: str, choices: tuple[str, ...] = ()) -> Any:
    assert kind in _PARSERS, kind
    return field(default=default, metadata={"help": help_text, "kind": kind, "choices": choices})


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """All settings of one node. Construct through `load_config()` or directly (tests).

    Invariant: a constructed BrokerConfig has passed `_validate()`.
    """

    # Identity and addresses.
    node_id: int = _setting(1, "This node's id (>= 1); unique in the cluster.", "int")
    cluster_id: str = _setting(
        "raftka", "Cluster name; peers with a different one are refused.", "str"
    )
    data_dir: str = _setting("./data", "Directory for logs, Raft state and snapshots.", "str")
    listen: HostPort | None = _setting(  # noqa: RUF009 (returns a dataclasses.field)
        None,
        "Kafka listener bind address HOST:PORT (default 127.0.0.1:9092). "
        "Use `listeners` instead for several listeners.",
        "opt_hostport",
    )
    advertise: HostPort | None = _setting(  # noqa: RUF009 (returns a dataclasses.field)
        None,
        "Address Metadata tells clients for `listen`; defaults to `listen`, "
        "required when `listen` is a wildcard address.",
        "opt_hostport",
    )
    listeners: tuple[ListenerSpec, ...] = _setting(
        (), "Kafka listeners NAME://HOST:PORT,... (replaces `listen`).", "listeners"
    )
    advertised_listeners: tuple[ListenerSpec, ...] = _setting(
        (),
        "Advertised address per listener name NAME://HOST:PORT,...; a listener missing "
        "here advertises its bind address.",
        "listeners",
    )
    raft_listen: HostPort = _setting(  # noqa: RUF009 (returns a dataclasses.field)
        HostPort("127.0.0.1", 9192), "Raft (broker-to-broker) listener HOST:PORT.", "hostport"
    )
    http_listen: HostPort = _setting(  # noqa: RUF009 (returns a dataclasses.field)
        HostPort("127.0.0.1", 9292),
        "HTTP listener HOST:PORT for /metrics, /healthz, /readyz, /v1/cluster.",
        "hostport",
    )
    peers: tuple[Peer, ...] = _setting(
        (),
        "The voters' Raft addresses ID@HOST:PORT,... including this node; "
        "empty means a one-node cluster.",
        "peers",
    )
    # Raft timing: the core counts ticks; only the driver knows tick_ms.
    tick_ms: int = _setting(50, "Length of one Raft tick in milliseconds.", "int")
    election_ticks: int = _setting(10, "Ticks without a leader before an election.", "int")
    heartbeat_ticks: int = _setting(2, "Ticks between leader heartbeats.", "int")
    # Storage.
    fsync: str = _setting(
        "always",
        "always: fsync before acknowledging; never: leave flushing to the OS.",
        "str",
        ("always", "never"),
    )
    segment_bytes_max: int = _setting(
        128 * MiB, "Roll a log segment when it reaches this size.", "int"
    )
    segment_age_ms_max: int = _setting(
        7 * _DAY_MS, "Roll a log segment when it is this old.", "int"
    )
    retention_ms: int = _setting(
        7 * _DAY_MS, "Default topic retention by age; -1 keeps forever.", "int"
    )
    retention_bytes: int = _setting(
        -1, "Default topic retention by partition size; -1 means no limit.", "int"
    )
    # Topics.
    auto_create_topics: bool = _setting(
        True, "Create unknown topics on Metadata/Produce requests.", "bool"
    )
    num_partitions: int = _setting(1, "Partitions of an auto-created topic.", "int")
    default_replication_factor: int | None = _setting(
        None, "Replication factor of new topics; default min(3, number of voters).", "opt_int"
    )
    # Limits on client traffic.
    frame_bytes_max: int = _setting(100 * MiB, "Largest Kafka request frame accepted.", "int")
    connections_max: int = _setting(1000, "Most concurrent Kafka client connections.", "int")
    inflight_requests_per_connection_max: int = _setting(
        64, "Most requests read from one connection before answering.", "int"
    )
    fetch_waiters_max: int = _setting(
        10000, "Most long-polling Fetch requests waiting at once.", "int"
    )
    message_bytes_max: int = _setting(
        1048588, "Largest record batch accepted by Produce (Kafka's message.max.bytes).", "int"
    )
    fetch_bytes_max: int = _setting(
        55 * MiB, "Largest Fetch response, whatever the client asks.", "int"
    )
    fetch_wait_ms_max: int = _setting(
        30000, "Longest Fetch long-poll, whatever the client asks.", "int"
    )
    producer_id_expiration_ms: int = _setting(
        _DAY_MS, "Forget an idle idempotent producer's state after this long.", "int"
    )
    # Consumer groups.
    group_initial_rebalance_delay_ms: int = _setting(
        0, "Wait this long for more members before the first rebalance of a group.", "int"
    )
    group_join_window_ms: int = _setting(
        100,
        "A rebalance completes once no new member has joined for this long (0: at once).",
        "int",
    )
    group_members_max: int = _setting(1000, "Most members of one consumer group.", "int")
    group_session_timeout_ms_min: int = _setting(
        6000, "Smallest session timeout a member may ask for.", "int"
    )
    group_session_timeout_ms_max: int = _setting(
        1_800_000, "Largest session timeout a member may ask for.", "int"
    )
    offsets_topic_partitions: int = _setting(
        10, "Partitions of the internal __consumer_offsets topic.", "int"
    )
    offsets_topic_replication_factor: int | None = _setting(
        None, "Replication factor of __consumer_offsets; default min(3, voters).", "opt_int"
    )
    offsets_retention_ms: int = _setting(
        7 * _DAY_MS, "Keep committed offsets of an empty group this long.", "int"
    )
    offsets_retention_check_interval_ms: int = _setting(
        60_000, "How often expired offsets and empty groups are removed.", "int"
    )
    offsets_metadata_bytes_max: int = _setting(
        4096, "Largest metadata string of one committed offset.", "int"
    )
    offsets_compaction_records_min: int = _setting(
        1000,
        "Compact a __consumer_offsets partition once it grew by more than this many records"
        " (and offsets_compaction_live_ratio times its live keys).",
        "int",
    )
    offsets_compaction_live_ratio: int = _setting(2, "See offsets_compaction_records_min.", "int")
    # Broker-to-broker transport.
    peer_queue_messages_max: int = _setting(
        10000, "Raft messages queued per peer before new ones are dropped.", "int"
    )
    peer_frame_bytes_max: int = _setting(
        64 * MiB, "Largest broker-to-broker frame sent or accepted.", "int"
    )
    peer_connect_timeout_ms: int = _setting(
        2000, "Give up a peer connection attempt (connect + handshake) after this.", "int"
    )
    peer_backoff_ms_min: int = _setting(50, "First reconnect delay to a peer.", "int")
    peer_backoff_ms_max: int = _setting(2000, "Largest reconnect delay to a peer.", "int")
    # Operations.
    log_level: str = _setting(
        "INFO", "Log level.", "str", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    )
    log_format: str = _setting("text", "Log line format.", "str", ("text", "json"))
    fault_injection: bool = _setting(
        False, "Serve the fault-injection HTTP endpoints (tests only).", "bool"
    )
    failpoints: str = _setting(
        "",
        "Crash points armed at start, e.g. append_before_fsync=0.01 (tests only).",
        "str",
    )
    durability_journal: bool = _setting(
        False, "Record what each fsync made durable, for power-loss tests.", "bool"
    )

    def __post_init__(self) -> None:
        _validate(self)

    # Derived values -------------------------------------------------------------------

    def voters(self) -> tuple[Peer, ...]:
        """The configured voters, or this node alone when `peers` is empty."""
        if self.peers:
            return self.peers
        return (Peer(self.node_id, self.raft_listen),)

    def replication_factor(self) -> int:
        """Replication factor of a new topic that does not ask for one."""
        if self.default_replication_factor is not None:
            return self.default_replication_factor
        return min(3, len(self.voters()))

    def offsets_replication_factor(self) -> int:
        if self.offsets_topic_replication_factor is not None:
            return self.offsets_topic_replication_factor
        return min(3, len(self.voters()))

    def kafka_listeners(self) -> tuple[Listener, ...]:
        """The Kafka listeners to bind, each with the address clients are told."""
        if not self.listeners:
            bind = self.listen or DEFAULT_LISTEN
            return (Listener(SIMPLE_LISTENER_NAME, bind, self.advertise or bind),)
        advertised = {spec.name: spec.address for spec in self.advertised_listeners}
        return tuple(
            Listener(spec.name, spec.address, advertised.get(spec.name, spec.address))
            for spec in self.listeners
        )


DEFAULT_LISTEN = HostPort("127.0.0.1", 9092)


# ---------------------------------------------------------------------------------------
# Validation: one small check per rule, each naming the setting it blames.


def _require(ok: bool, setting: str, value: object, reason: str) -> None:
    if not ok:
        raise ConfigError(setting, value, reason)


def _check_range(cfg: BrokerConfig, name: str, low: int, high: int = 2**63 - 1) -> None:
    value = getattr(cfg, name)
    _require(
        isinstance(value, int) and not isinstance(value, bool),
        name,
        value,
        "must be an integer",
    )
    _require(low <= value <= high, name, value, f"must be between {low} and {high}")


_RANGES: tuple[tuple[str, int, int], ...] = (
    ("node_id", 1, _INT32_MAX),
    ("tick_ms", 1, 60_000),
    ("election_ticks", 2, 10_000),
    ("heartbeat_ticks", 1, 10_000),
    ("segment_bytes_max", 1024, _INT32_MAX),
    ("segment_age_ms_max", 1, 2**62),
    ("retention_ms", -1, 2**62),
    ("retention_bytes", -1, 2**62),
    ("num_partitions", 1, 100_000),
    ("frame_bytes_max", 1024, _INT32_MAX),
    ("connections_max", 1, 1_000_000),
    ("inflight_requests_per_connection_max", 1, 100_000),
    ("fetch_waiters_max", 1, 10_000_000),
    ("message_bytes_max", 1, _INT32_MAX),
    ("fetch_bytes_max", 1, _INT32_MAX),
    ("fetch_wait_ms_max", 0, 3_600_000),
    ("producer_id_expiration_ms", 1, 2**62),
    ("group_initial_rebalance_delay_ms", 0, 3_600_000),
    ("group_join_window_ms", 0, 60_000),
    ("group_members_max", 1, 1_000_000),
    ("group_session_timeout_ms_min", 1, _INT32_MAX),
    ("group_session_timeout_ms_max", 1, _INT32_MAX),
    ("offsets_topic_partitions", 1, 1000),
    ("offsets_retention_ms", 1, 2**62),
    ("offsets_retention_check_interval_ms", 1, 2**62),
    ("offsets_metadata_bytes_max", 0, 1 << 20),
    ("offsets_compaction_records_min", 1, 2**62),
    ("offsets_compaction_live_ratio", 1, 1000),
    ("peer_queue_messages_max", 1, 10_000_000),
    ("peer_frame_bytes_max", 1024, _INT32_MAX),
    ("peer_connect_timeout_ms", 1, 600_000),
    ("peer_backoff_ms_min", 1, 600_000),
    ("peer_backoff_ms_max", 1, 600_000),
)

_CLUSTER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LISTENER_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


def _validate(cfg: BrokerConfig) -> None:
    for name, low, high in _RANGES:
        _check_range(cfg, name, low, high)
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        _require(not choices or value in choices, f.name, value, f"must be one of {choices}")
    _require(bool(_CLUSTER_ID.match(cfg.cluster_id)), "cluster_id", cfg.cluster_id,
             "must be 1-64 characters of letters, digits, '.', '_' or '-'")  # fmt: skip
    _require(cfg.data_dir.strip() != "", "data_dir", cfg.data_dir, "must not be empty")
    _require(
        cfg.election_ticks > cfg.heartbeat_ticks,
        "election_ticks",
        cfg.election_ticks,
        f"must be greater than heartbeat_ticks ({cfg.heartbeat_ticks})",
    )
    _require(
        cfg.group_session_timeout_ms_min <= cfg.group_session_timeout_ms_max,
        "group_session_timeout_ms_min",
        cfg.group_session_timeout_ms_min,
        "must not exceed group_session_timeout_ms_max",
    )
    _require(
        cfg.peer_backoff_ms_min <= cfg.peer_backoff_ms_max,
        "peer_backoff_ms_min",
        cfg.peer_backoff_ms_min,
        "must not exceed peer_backoff_ms_max",
    )
    _require(
        cfg.message_bytes_max <= cfg.frame_bytes_max,
        "message_bytes_max",
        cfg.message_bytes_max,
        f"must not exceed frame_bytes_max ({cfg.frame_bytes_max})",
    )
    try:
        parse_failpoints(cfg.failpoints)
    except ValueError as error:
        _require(False, "failpoints", cfg.failpoints, str(error))
    _validate_peers(cfg)
    _validate_replication(cfg)
    _validate_listeners(cfg)
    _validate_binds(cfg)


def _validate_peers(cfg: BrokerConfig) -> None:
    text = ",".join(f"{p.node_id}@{p.address}" for p in cfg.peers)
    ids = [p.node_id for p in cfg.peers]
    _require(len(ids) == len(set(ids)), "peers", text, "a node id appears twice")
    for peer in cfg.peers:
        _require(1 <= peer.node_id <= _INT32_MAX, "peers", text,
                 f"node id {peer.node_id} must be >= 1")  # fmt: skip
        _require(not peer.address.is_wildcard, "peers", text,
                 f"peer {peer.node_id} has a wildcard address; give a reachable one")  # fmt: skip
    _require(not cfg.peers or cfg.node_id in ids, "peers", text,
             f"must include this node (node_id={cfg.node_id})")  # fmt: skip


def _validate_replication(cfg: BrokerConfig) -> None:
    voters = len(cfg.voters())
    for name in ("default_replication_factor", "offsets_topic_replication_factor"):
        value = getattr(cfg, name)
        if value is not None:
            _require(1 <= value <= voters, name, value,
                     f"must be between 1 and the number of voters ({voters})")  # fmt: skip


def _validate_listeners(cfg: BrokerConfig) -> None:
    if not cfg.listeners:
        _require(not cfg.advertised_listeners, "advertised_listeners",
                 _listeners_text(cfg.advertised_listeners),
                 "needs `listeners`; with one listener use `advertise`")  # fmt: skip
        bind = cfg.listen or DEFAULT_LISTEN
        if cfg.advertise is None:
            _require(not bind.is_wildcard, "advertise", None,
                     f"must be set when listen is the wildcard address {bind}: clients "
                     "cannot connect to it")  # fmt: skip
        else:
            _require(not cfg.advertise.is_wildcard, "advertise", str(cfg.advertise),
                     "must be an address clients can connect to, not a wildcard")  # fmt: skip
        return
    text = _listeners_text(cfg.listeners)
    _require(cfg.listen is None, "listen", str(cfg.listen),
             "cannot be combined with `listeners`; add it to `listeners` instead")  # fmt: skip
    _require(cfg.advertise is None, "advertise", str(cfg.advertise),
             "cannot be combined with `listeners`; use `advertised_listeners`")  # fmt: skip
    names = [spec.name for spec in cfg.listeners]
    _require(len(names) == len(set(names)), "listeners", text, "a listener name appears twice")
    for name in names:
        _require(bool(_LISTENER_NAME.match(name)), "listeners", text,
                 f"listener name {name!r} must be letters, digits and '_'")  # fmt: skip
    adv_text = _listeners_text(cfg.advertised_listeners)
    adv_names = [spec.name for spec in cfg.advertised_listeners]
    _require(len(adv_names) == len(set(adv_names)), "advertised_listeners", adv_text,
             "a listener name appears twice")  # fmt: skip
    for spec in cfg.advertised_listeners:
        _require(spec.name in names, "advertised_listeners", adv_text,
                 f"{spec.name} is not one of the listeners {names}")  # fmt: skip
        _require(not spec.address.is_wildcard, "advertised_listeners", adv_text,
                 f"{spec.name} advertises a wildcard address")  # fmt: skip
    for listener in cfg.kafka_listeners():
        _require(not listener.advertised.is_wildcard, "advertised_listeners", adv_text,
                 f"listener {listener.name} binds {listener.bind}; give it an advertised "
                 "address")  # fmt: skip


def _validate_binds(cfg: BrokerConfig) -> None:
    binds = [(f"listener {lst.name}", lst.bind) for lst in cfg.kafka_listeners()]
    binds += [("raft_listen", cfg.raft_listen), ("http_listen", cfg.http_listen)]
    for i, (name_a, a) in enumerate(binds):
        for name_b, b in binds[i + 1 :]:
            clash = a.port == b.port and (a.host == b.host or a.is_wildcard or b.is_wildcard)
            setting = name_b if name_b in ("raft_listen", "http_listen") else "listeners"
            _require(not clash, setting, str(b), f"port clashes with {name_a} ({a})")


def _listeners_text(specs: tuple[ListenerSpec, ...]) -> str:
    return ",".join(f"{s.name}://{s.address}" for s in specs)


# ---------------------------------------------------------------------------------------
# Loading: defaults < TOML < environment < command line.


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One row of the configuration reference."""

    name: str
    default: str
    env_var: str
    cli_flag: str
    help: str
    choices: tuple[str, ...]


def setting_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(BrokerConfig))


def env_var_for(name: str) -> str:
    return ENV_PREFIX + name.upper()


def cli_flag_for(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_reference() -> list[SettingInfo]:
    """Every setting with its default, environment variable, flag and help text."""
    rows = []
    for f in dataclasses.fields(BrokerConfig):
        rows.append(
            SettingInfo(
                name=f.name,
                default=format_value(f.default),
                env_var=env_var_for(f.name),
                cli_flag=cli_flag_for(f.name),
                help=f.metadata["help"],
                choices=f.metadata["choices"],
            )
        )
    return rows


def format_value(value: object) -> str:
    """Renders a typed value back in the syntax the parsers accept."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        parts = []
        for item in value:
            if isinstance(item, Peer):
                parts.append(f"{item.node_id}@{item.address}")
            elif isinstance(item, ListenerSpec):
                parts.append(f"{item.name}://{item.address}")
            else:
                parts.append(str(item))
        return ",".join(parts)
    return str(value)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config plus where each non-default setting came from (DescribeConfigs sources)."""

    config: BrokerConfig
    sources: Mapping[str, str]


def load_config(
    cli: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> LoadedConfig:
    """Builds and validates the config from the layers. `cli` maps setting names to text.

    `env` defaults to `os.environ`; only `RAFTKA_*` variables are read, and an unknown
    one is an error (a typo would otherwise be ignored silently). `RAFTKA_CONFIG` names
    the TOML file when `config_file` is not given.
    """
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(BrokerConfig)}
    raw: dict[str, tuple[object, str]] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        for name, value in _read_toml(config_file, fields).items():
            raw[name] = (value, f"config file {config_file}")
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in fields:
            raise ConfigError(name, value, "unknown setting", f"environment {key}")
        raw[name] = (value, f"environment {key}")
    for name, value in (cli or {}).items():
        if name not in fields:
            raise ConfigError(name, value, "unknown setting", "command line")
        raw[name] = (value, f"command line {cli_flag_for(name)}")
    values: dict[str, Any] = {}
    for name, (value, source) in raw.items():
        try:
            values[name] = _coerce(fields[name], value)
        except ValueError as exc:
            raise ConfigError(name, value, str(exc), source) from None
    try:
        config = BrokerConfig(**values)
    except ConfigError as exc:
        source = raw.get(exc.setting, (None, ""))[1]
        raise exc.with_source(source) from None
    return LoadedConfig(config, {name: source for name, (_, source) in raw.items()})


def _read_toml(path: str, fields: Mapping[str, dataclasses.Field[Any]]) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("config", path, f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", path, f"not valid TOML: {exc}") from None
    for key in data:
        if key not in fields:
            raise ConfigError(key, data[key], "unknown setting", f"config file {path}")
    return data


def _coerce(f: dataclasses.Field[Any], value: object) -> object:
    """Turns a TOML value or a string into the field's type."""
    kind = f.metadata["kind"]
    if isinstance(value, str):
        parsed = _PARSERS[kind](value)
        if kind == "str" and f.name == "log_level":
            parsed = value.strip().upper()
        return parsed
    if kind in ("int", "opt_int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind in ("peers", "listeners") and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ValueError("expected a list of strings")
        return _PARSERS[kind](",".join(value))
    raise ValueError(f"expected a string, got {type(value).__name__}")
