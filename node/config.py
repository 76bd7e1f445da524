"""Settings: one object for the whole node, read from a TOML file and `GPUNODE_*` environment.

Precedence (highest first): explicit arguments, environment (`GPUNODE_CHAIN__RPC_URL=...`),
the TOML file (`GPUNODE_CONFIG` or `<home>/config.toml`), defaults. Each layer owns one section.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from node.errors import ConfigError


def default_home() -> Path:
    """`$GPUNODE_HOME`, else `~/.gpunode`; relative paths in the settings are resolved against it."""
    return Path(os.environ.get("GPUNODE_HOME") or Path.home() / ".gpunode")


class _Section(BaseModel):
    # A misspelt key would otherwise be ignored and its default silently used.
    model_config = ConfigDict(extra="forbid")


class ChainSettings(_Section):
    """Where the chain is and how hard to try when talking to it."""

    # "embedded" runs py-evm in process (web3's EthereumTesterProvider); else an HTTP(S) JSON-RPC URL.
    rpc_url: str = Field(default="embedded", pattern=r"^(embedded|https?://\S+)$")
    registry_address: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$")
    market_address: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$")
    confirmations: int = Field(default=0, ge=0, description="blocks an event must be buried under")
    receipt_timeout_s: float = Field(default=60.0, gt=0)
    rpc_retries: int = Field(default=3, ge=0)
    poll_interval_s: float = Field(default=1.0, gt=0)


class KeySettings(_Section):
    """The node's one secp256k1 key: Ethereum account and libp2p identity."""

    keystore: Path = Path("keystore.json")
    # The password is read from this environment variable or prompted for; never stored in config.
    password_env: str = "GPUNODE_KEY_PASSWORD"  # noqa: S105 (a variable's name, not a password)


_MULTIADDR = r"^(/[^/\s]+)+$"
_PEER_MULTIADDR = r"^(/[^/\s]+)+/p2p/[1-9A-HJ-NP-Za-km-z]+$"


class P2PSettings(_Section):
    """The libp2p overlay."""

    listen: list[str] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    # Addresses to advertise before the ones we listen on: a public address behind NAT or a
    # port forward, e.g. "/ip4/203.0.113.7/tcp/4001" or "/dns4/gpu.example.org/tcp/4001".
    announce: list[Annotated[str, Field(pattern=_MULTIADDR)]] = Field(default_factory=list, max_length=8)
    # Peers to dial at start and whenever they drop: full multiaddrs ending in /p2p/<peer id>.
    bootstrap: list[Annotated[str, Field(pattern=_PEER_MULTIADDR)]] = Field(default_factory=list)
    # Find peers on the local network by multicast DNS.
    mdns: bool = False

    @field_validator("announce", "bootstrap")
    @classmethod
    def _parsable_multiaddrs(cls, value: list[str]) -> list[str]:
        import multiaddr  # here, not at the top: most commands never load p2p settings' libraries

        for addr in value:
            try:
                multiaddr.Multiaddr(addr)
            except Exception as exc:
                raise ValueError(f"{addr!r} is not a multiaddr: {exc}") from None
        return value

    advert_refresh_s: float = Field(default=30.0, gt=0)
    advert_ttl_s: float = Field(default=120.0, gt=0)
    job_timeout_s: float = Field(default=30.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)


class ExecutorSettings(_Section):
    """The sandboxed executor."""

    model_dir: Path = Path("models")
    model_cache_bytes: int = Field(default=20 * 2**30, gt=0)
    sandbox: Literal["bwrap", "none"] = "bwrap"
    job_timeout_s: float = Field(default=60.0, gt=0)
    worker_memory_bytes: int = Field(default=8 * 2**30, gt=0)
    max_input_bytes: int = Field(default=64 * 2**20, gt=0)
    max_batch: int = Field(default=32, ge=1)
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    # A joining generation's prompt runs this many tokens at most between two decoding steps of
    # the running batch, so a long prompt does not stall the streams already running.
    prefill_chunk_tokens: int = Field(default=512, ge=1)
    # A generation's first text streams at once, the rest at most this often (0: every token).
    stream_interval_ms: float = Field(default=20.0, ge=0, le=1000)
    threads: int = Field(default=1, ge=1)
    workers_per_model: int = Field(default=1, ge=1)
    max_output_bytes: int = Field(default=256 * 2**20, gt=0)
    tmpfs_bytes: int = Field(default=256 * 2**20, gt=0)
    max_processes: int = Field(default=64, ge=8, description="pids.max / RLIMIT_NPROC per worker")
    worker_cpu_seconds: int = Field(default=3600, gt=0, description="RLIMIT_CPU of a warm worker")
    # Workers run as sandbox_uid_base + slot, so no two share a uid (and an RLIMIT_NPROC count).
    sandbox_uid_base: int = Field(default=2_000_000_000, gt=0, lt=2**32 - 2**16)
    # Pin ATEN_CPU_CAPABILITY (e.g. "avx2") so results reproduce across machines; None = torch's pick.
    cpu_capability: str | None = None
    deterministic: bool = True


class StorageSettings(_Section):
    """The node's database; SQLite by default, PostgreSQL by URL."""

    # A relative SQLite path is taken under the node's home. SQLite commits survive a crash of the
    # node (synchronous=normal, the default); add `?synchronous=full` to also survive a power cut,
    # at an fsync per commit (node.storage.engine.SQLITE_SYNCHRONOUS).
    url: str = "sqlite:///gpunode.db"


class ApiSettings(_Section):
    """The gRPC API the CLI and SDK talk to."""

    listen: str = Field(default="127.0.0.1:50051", pattern=r"^\S+:\d{1,5}$")
    # A model upload larger than this is refused before it fills the disk.
    max_upload_bytes: int = Field(default=4 * 2**30, gt=0)
    # The largest message a call may carry (a job's input on submit, its output on get and watch).
    max_message_bytes: int = Field(default=256 * 2**20, ge=4 * 2**20)
    grace_s: float = Field(default=5.0, ge=0, description="how long stop() lets calls in flight finish")
    # Ask every caller for the bearer token in <home>/api.token (made on first start, mode 0600);
    # worth it whenever `listen` is reachable by anyone but this machine's owner.
    require_token: bool = False


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class HttpSettings(_Section):
    """The HTTP face: an OpenAI-compatible API, Prometheus `/metrics` and the dashboard at `/`."""

    # None: on for a client, off for a provider (whose owner scrapes `/metrics` by turning it on).
    enabled: bool | None = None
    listen: str = Field(default="127.0.0.1:8000", pattern=r"^\S+:\d{1,5}$")
    # Ask every caller for the bearer token in <home>/api.token (the gRPC API's). Required to
    # listen on anything but loopback: the API spends this node's deposit.
    require_token: bool = False
    # A request body larger than this is refused before it is read whole.
    max_body_bytes: int = Field(default=4 * 2**20, ge=1024)
    # The most a job submitted over HTTP may cost (wei); the provider's price is what is paid.
    max_price_wei: int = Field(default=10**15, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def loopback(self) -> bool:
        return self.host in _LOOPBACK_HOSTS or self.host.startswith("127.")

    def serves(self, *, provider: bool) -> bool:
        return (not provider) if self.enabled is None else self.enabled


class ClientSettings(_Section):
    """How this node picks providers for the jobs it submits."""

    # The share of decisions that send the job to an eligible provider this node never used
    # and that has a free slot, so a provider that is new gets a chance to show what it does.
    exploration: float = Field(default=0.05, ge=0, le=1)
    # The share of verified results re-run on a second provider and compared (spot checks); it
    # is raised for providers this node has seen little of. 0 turns spot checks off.
    spot_check_share: float = Field(default=0.06, ge=0, le=1)
    # For this long after the node starts, a job submitted before any provider's advert has been
    # heard waits (within its timeout) for the first adverts instead of failing at once.
    discovery_wait_s: float = Field(default=10.0, ge=0, le=600)


class ProviderSettings(_Section):
    """What a provider offers and what it asks for it (prices in wei)."""

    enabled: bool = False
    models: list[str] = Field(default_factory=list)
    price_per_job_wei: int = Field(default=10**12, ge=0)
    max_queue: int = Field(default=64, ge=1)
    stake_wei: int = Field(default=10**18, ge=0)
    # The most gas an on-chain job's callback may ask for: this provider pays for it when it submits.
    max_callback_gas: int = Field(default=500_000, ge=0)
    # Benchmark the devices at start (a few seconds) so adverts carry measured throughput.
    benchmark_on_start: bool = True
    # Models a job names that this provider does not hold are fetched over the overlay (from the
    # client or a peer that has them), checked like `gpunode models add`, installed and warmed,
    # within `max_fetch_bytes`; the first job pays `cold_start_price_wei` on top of the price.
    fetch_models: bool = True
    max_fetch_bytes: int = Field(default=4 * 2**30, gt=0)
    cold_start_price_wei: int = Field(default=10**13, ge=0)
    # Each fetched model keeps a warm worker until the node stops: at most this many per run.
    max_fetched_models: int = Field(default=4, ge=1)


class Settings(BaseSettings):
    """Everything a node needs, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="GPUNODE_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    home: Path = Field(default_factory=default_home)
    log_level: str = "INFO"
    log_json: bool = False
    chain: ChainSettings = Field(default_factory=ChainSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    p2p: P2PSettings = Field(default_factory=P2PSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)
    provider: ProviderSettings = Field(default_factory=ProviderSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("GPUNODE_CONFIG") or str(default_home() / "config.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    @model_validator(mode="after")
    def _resolve_paths_under_home(self) -> Settings:
        home = self.home.expanduser()
        self.home = home
        self.keys.keystore = home / self.keys.keystore.expanduser()
        self.executor.model_dir = home / self.executor.model_dir.expanduser()
        prefix = "sqlite:///"
        if self.storage.url.startswith(prefix) and not self.storage.url[len(prefix) :].startswith(("/", ":")):
            self.storage.url = f"{prefix}{home / self.storage.url[len(prefix) :]}"
        return self


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, turning validation failures into a `ConfigError` that names the bad field."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(
            f"config file {config_file} does not exist", hint="run `gpunode init` to create one"
        )
    previous = os.environ.get("GPUNODE_CONFIG")
    try:
        if config_file is not None:
            os.environ["GPUNODE_CONFIG"] = str(config_file)
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file is not valid TOML: {exc}", hint="fix or remove it") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("GPUNODE_CONFIG", None)
            else:
                os.environ["GPUNODE_CONFIG"] = previous
