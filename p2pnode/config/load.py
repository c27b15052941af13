"""Loading the configuration: four sources, one precedence, one typed :class:`Config`.

Values come from, highest first: command-line flags, ``P2PNODE_<KEY>`` environment variables,
``config.toml`` in the data dir, then the schema's defaults. A bad value anywhere raises
:class:`~p2pnode.config.schema.ConfigError` whose message is one line naming the key, the
source and the reason.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.config.schema import (
    _BY_KEY,
    CONFIG_FILE,
    DB_FILE,
    DEFAULT_DATA_DIR,
    ENV_PREFIX,
    KEY_FILE,
    SCHEMA,
    SOCKET_FILE,
    ConfigError,
    Setting,
)


@dataclass(frozen=True, slots=True)
class DhtConfig:
    bucket_size: int
    alpha: int
    replication: int
    record_ttl: float
    republish_interval: float
    refresh_interval: float
    max_value_size: int
    max_stores_per_second: float


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    connect_timeout: float
    request_timeout: float
    bootstrap_max_backoff: float
    max_inflight_per_peer: int


@dataclass(frozen=True, slots=True)
class BlobsConfig:
    max_store_bytes: int
    fetch_timeout: float
    find_timeout: float
    chunk_timeout: float
    window: int
    direct_io: bool
    max_upload_rate: float
    max_model_bytes: int
    max_update_bytes: int
    max_user_bytes: int
    keep_models: int
    keep_update_rounds: int


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    ring_probe_every: int
    suspicion_mult: float
    suspicion_scale_cap: float
    suspicion_max_timeout_mult: float
    suspicion_confirmations: int
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    retransmit_scale_cap: int
    push_pull_interval: float
    max_packets_per_second: float
    slots: int


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    validators: tuple[str, ...]
    checkpoint_interval: int
    window: int
    max_batch: int
    max_inflight: int
    request_timeout: float
    view_change_timeout: float
    status_interval: float
    submit_timeout: float
    retry_interval: float
    client_lanes: int
    queue_size: int
    fault: str


@dataclass(frozen=True, slots=True)
class IpcConfig:
    max_frame: int
    max_clients: int
    idle_timeout: float
    frame_timeout: float
    max_buffered: int


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    slots: int
    start_timeout: float
    result_timeout: float
    fetch_timeout: float
    model_modules: tuple[str, ...]
    attack: str
    attack_scale: float
    delay: float
    byzantine_proposer: bool
    censor: bool
    flood: int
    unsolicited: bool
    max_notices_per_minute: int


@dataclass(frozen=True, slots=True)
class CollectivesConfig:
    stall_timeout: float
    op_timeout: float
    reform_wait: float
    fault: str


@dataclass(frozen=True, slots=True)
class TrustConfig:
    validator_stake: float
    genesis: tuple[str, ...]
    params: tuple[str, ...]
    tick_interval: float
    commit_timeout: float


@dataclass(frozen=True, slots=True)
class NatConfig:
    reachability: str
    relays: tuple[str, ...]
    max_reservations: int
    confirmations: int
    check_interval: float
    dialback_timeout: float
    hole_punch: str


@dataclass(frozen=True, slots=True)
class RelayConfig:
    service: str
    max_reservations: int
    reservation_ttl: float
    max_circuits: int
    max_circuits_per_peer: int
    max_circuit_bytes: int
    max_circuit_duration: float
    max_rate: float
    max_requests_per_minute: float


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    mdns: bool


@dataclass(frozen=True, slots=True)
class HttpConfig:
    port: int  # 0: the web view is off
    max_clients: int
    queue_size: int
    read_timeout: float


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    listen: tuple[str, ...]
    announce: tuple[str, ...]
    bootstrap: tuple[str, ...]
    psk_file: Path | None
    metrics_port: int | None
    log_level: str
    log_format: str
    log_levels: str
    shutdown_timeout: float
    dht: DhtConfig
    network: NetworkConfig
    ipc: IpcConfig
    blobs: BlobsConfig
    membership: MembershipConfig
    consensus: ConsensusConfig
    training: TrainingConfig
    collectives: CollectivesConfig
    trust: TrustConfig
    nat: NatConfig
    relay: RelayConfig
    discovery: DiscoveryConfig
    http: HttpConfig

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_FILE

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    def read_psk(self) -> str | None:
        """The private-network key as 64 hex characters, or None when no psk_file is set."""
        if self.psk_file is None:
            return None
        try:
            text = self.psk_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"psk_file: cannot read {self.psk_file}: {exc.strerror}") from None
        # Accept the go-ipfs swarm.key layout too: the key is its last non-empty line.
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        key = lines[-1] if lines else ""
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                f"psk_file: {self.psk_file} must hold 64 hexadecimal characters (32 bytes)"
            )
        return key.lower()


def resolve_data_dir(flag: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """Data dir precedence: --data-dir, then P2PNODE_DATA_DIR, then ~/.p2pnode."""
    raw = flag if flag is not None else env.get(ENV_PREFIX + "DATA_DIR") or DEFAULT_DATA_DIR
    return Path(raw).expanduser().absolute()


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    """Turn a raw value from one source into the setting's type, or raise ConfigError."""
    where = f"{setting.key} (from {source})"
    from_text = isinstance(raw, str) and setting.kind is not str
    if setting.optional and (raw is None or raw == "" or (from_text and raw.lower() == "off")):
        return None
    try:
        if setting.kind is list:
            if isinstance(raw, str):
                value: Any = [p.strip() for p in raw.split(",") if p.strip()]
            elif isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
                value = list(raw)
            else:
                raise TypeError("must be a list of strings")
        elif setting.kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise TypeError("must be true or false")
        elif setting.kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise TypeError("must be an integer")
            value = int(raw)
        elif setting.kind is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise TypeError("must be a number")
            value = float(raw)
            if value != value:
                raise TypeError("must be a number, not NaN")
        else:
            if not isinstance(raw, str):
                raise TypeError("must be a string")
            value = raw
    except (TypeError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, TypeError) else f"must be {setting.kind.__name__}"
        raise ConfigError(f"config key {where}: {reason}, got {raw!r}") from None
    if setting.check is not None:
        reason = setting.check(value)
        if reason:
            raise ConfigError(f"config key {where}: {reason}, got {raw!r}")
    return value


def _flatten_toml(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten_toml(value, key + "."))
        else:
            flat[key] = value
    return flat


def load_config(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config: ``overrides`` (flags) > env > config.toml > defaults.

    ``overrides`` maps dotted keys to values; a None value means "not given on the command line".
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.key: s.default for s in SCHEMA}
    path = data_dir / CONFIG_FILE
    if path.exists():
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:  # tomllib recurses into nested arrays and inline tables
            raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except ValueError as exc:  # tomllib's int() of a literal of more than 4300 digits
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        for key, raw in _flatten_toml(tree).items():
            setting = _BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"config key {key} (from {path}): unknown setting")
            values[key] = _coerce(setting, raw, str(path))
    for setting in SCHEMA:
        name = _env_name(setting.key)
        if name in env:
            values[setting.key] = _coerce(setting, env[name], f"${name}")
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = _BY_KEY.get(key)
        if setting is None:
            raise ConfigError(f"config key {key}: unknown setting")
        values[key] = _coerce(setting, raw, "command line")

    psk = values["psk_file"]
    psk_path = None
    if psk is not None:
        psk_path = Path(psk).expanduser()
        if not psk_path.is_absolute():
            psk_path = (data_dir / psk_path).absolute()
    cfg = Config(
        data_dir=data_dir,
        listen=tuple(values["listen"]),
        announce=tuple(values["announce"]),
        bootstrap=tuple(values["bootstrap"]),
        psk_file=psk_path,
        metrics_port=values["metrics_port"],
        log_level=values["log_level"].lower(),
        log_format=values["log_format"],
        log_levels=values["log_levels"],
        shutdown_timeout=values["shutdown_timeout"],
        dht=DhtConfig(**{k[4:]: v for k, v in values.items() if k.startswith("dht.")}),
        network=NetworkConfig(**{k[8:]: v for k, v in values.items() if k.startswith("network.")}),
        ipc=IpcConfig(**{k[4:]: v for k, v in values.items() if k.startswith("ipc.")}),
        blobs=BlobsConfig(**{k[6:]: v for k, v in values.items() if k.startswith("blobs.")}),
        membership=MembershipConfig(
            **{k[11:]: v for k, v in values.items() if k.startswith("membership.")}
        ),
        consensus=ConsensusConfig(
            **{
                k[10:]: tuple(v) if isinstance(v, list) else v
                for k, v in values.items()
                if k.startswith("consensus.")
            }
        ),
        training=TrainingConfig(
            **{
                k[9:]: tuple(v) if isinstance(v, list) else v
                for k, v in values.items()
                if k.startswith("training.")
            }
        ),
        collectives=CollectivesConfig(
            **{k[12:]: v for k, v in values.items() if k.startswith("collectives.")}
        ),
        trust=TrustConfig(
            **{
                k[6:]: tuple(v) if isinstance(v, list) else v
                for k, v in values.items()
                if k.startswith("trust.")
            }
        ),
        nat=NatConfig(
            **{
                k[4:]: tuple(v) if isinstance(v, list) else v
                for k, v in values.items()
                if k.startswith("nat.")
            }
        ),
        relay=RelayConfig(**{k[6:]: v for k, v in values.items() if k.startswith("relay.")}),
        discovery=DiscoveryConfig(
            **{k[10:]: v for k, v in values.items() if k.startswith("discovery.")}
        ),
        http=HttpConfig(**{k[5:]: v for k, v in values.items() if k.startswith("http.")}),
    )
    if not cfg.listen:
        raise ConfigError("config key listen: at least one listen multiaddr is needed")
    cons = cfg.consensus
    if cons.window < cons.checkpoint_interval or cons.window % cons.checkpoint_interval:
        raise ConfigError("config key consensus.window: must be a multiple of checkpoint_interval")
    if cfg.membership.probe_timeout >= cfg.membership.probe_interval:
        raise ConfigError(
            "config key membership.probe_timeout: must be shorter than membership.probe_interval"
        )
    if cfg.dht.republish_interval >= cfg.dht.record_ttl:
        raise ConfigError(
            "config key dht.republish_interval: must be shorter than dht.record_ttl "
            f"({cfg.dht.republish_interval:g} >= {cfg.dht.record_ttl:g}), or records expire"
        )
    return cfg
