"""Node configuration: one schema, four sources, one precedence.

Every setting has a dotted key (``dht.replication``), a type, a default, a check and a line of
documentation, all in :data:`SCHEMA`. Values come from, highest first: command-line flags,
``P2PNODE_<KEY>`` environment variables (dots become underscores: ``P2PNODE_DHT_REPLICATION``),
``config.toml`` in the data dir, then the defaults. A bad value anywhere raises
:class:`ConfigError` whose message is one line naming the key, the source and the reason. The
commented ``config.toml`` that ``p2pnode init`` writes and the reference ``docs/configuration.md``
(:func:`config_reference_markdown`, checked by a unit test) are generated from the same schema,
so neither can disagree with the code.
"""

from p2pnode.config.load import (
    BlobsConfig,
    Config,
    ConsensusConfig,
    DhtConfig,
    IpcConfig,
    MembershipConfig,
    NetworkConfig,
    load_config,
    resolve_data_dir,
)
from p2pnode.config.render import (
    REFERENCE_COMMAND,
    config_reference_markdown,
    render_config_template,
)
from p2pnode.config.schema import (
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

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "DEFAULT_DATA_DIR",
    "ENV_PREFIX",
    "KEY_FILE",
    "REFERENCE_COMMAND",
    "SCHEMA",
    "SOCKET_FILE",
    "BlobsConfig",
    "Config",
    "ConfigError",
    "ConsensusConfig",
    "DhtConfig",
    "IpcConfig",
    "MembershipConfig",
    "NetworkConfig",
    "Setting",
    "config_reference_markdown",
    "load_config",
    "render_config_template",
    "resolve_data_dir",
]
