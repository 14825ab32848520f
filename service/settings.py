"""Settings from the environment (prefix ``MLLEDGER_``), with safe defaults for
the embedded single-process mode and refusals of unsafe values in production."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.integrity.witness_policy import PolicyError, configured_policy
from domain.usage import Rates


class Settings(BaseSettings):
    """Where the ledger lives and how it behaves."""

    model_config = SettingsConfigDict(env_prefix="MLLEDGER_", extra="ignore")

    environment: str = Field("development", description="development | test | production")
    data_dir: Path = Field(Path("data"), description="blobs, keys and the SQLite database")
    database_url: str = Field("", description="postgresql://user@host:port/db, or empty for SQLite under data_dir")
    database_schema: str = Field("public", description="PostgreSQL schema for all tables")
    key_path: Path | None = Field(None, description="ledger key PEM; default data_dir/keys")
    key_uri: SecretStr = Field(
        SecretStr(""),
        description="the ledger key in a PKCS#11 token, an RFC 7512 URI such as "
        "pkcs11:token=T;object=O?pin-source=file:/path (or pin-value=...); empty: the key file",
    )
    pkcs11_module: str = Field(
        "/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module for key URIs without module-path"
    )
    max_payload_bytes: int = Field(1_048_576, gt=0, description="largest canonical event")
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="largest dataset or artifact upload")
    import_dir: Path | None = Field(None, description="where file:// URIs may point; default data_dir/import")
    admin_api_key: str | None = Field(None, description="the first admin's API key (else generated and printed once)")
    log_origin: str = Field("mlledger.local/ledger", description="checkpoint origin line")
    checkpoint_every_events: int = Field(1000, gt=0)
    checkpoint_every_seconds: float = Field(10.0, gt=0)
    witnesses: str = Field("", description="witnesses to submit checkpoints to: name=url=vkey,...")
    witness_policy: str = Field(
        "", description="how many must cosign: a number k (k of the witnesses), or C2SP tlog-policy text"
    )
    witness_timeout_seconds: float = Field(5.0, gt=0, description="how long one witness may take to answer")
    projection_batch_size: int = Field(500, gt=0)
    projection_poll_seconds: float = Field(0.2, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0, description="how often runners signal life")
    heartbeat_timeout_seconds: float = Field(30.0, gt=0, description="silence after which a run is abandoned")
    python_sandbox: Literal["on", "off"] = Field("on", description="python pipelines run sandboxed; off is UNSAFE")
    read_wait_seconds: float = Field(2.0, ge=0, description="how long reads wait for min_position")
    max_json_bytes: int = Field(64 * 1024**2, gt=0, description="largest JSON request body")
    reason_codes: int = Field(4, ge=0, le=50, description="reason codes recorded per prediction")
    max_batch_rows: int = Field(10_000, gt=0, description="most rows one predict:batch request may carry")
    group_commit_max_events: int = Field(20_000, gt=0, description="most events one group commit writes")
    write_brake_lag_seconds: float = Field(
        0.0, ge=0, description="prediction writes wait while a read model is this many seconds behind (0: never)"
    )
    write_brake_max_wait_seconds: float = Field(
        30.0, gt=0, description="longest a held-back prediction write waits before a 503"
    )
    write_brake_max_waiting: int = Field(
        16, gt=0, description="most held-back prediction writes one API key may have waiting in an API process"
    )
    write_brake_concurrency: int = Field(
        2, gt=0, description="bulk prediction writes one API process records at once while the brake is on"
    )
    group_commit_commands: bool = Field(
        True, description="every command of an API process shares group commits (not only predictions)"
    )
    model_cache_size: int = Field(8, gt=0, description="model versions kept loaded for serving")
    monitor_window: int = Field(500, ge=30, description="served predictions per drift window")
    monitor_seconds: float = Field(30.0, gt=0, description="how often the monitor checks for drift")
    psi_threshold: float = Field(0.2, gt=0, description="PSI above which a feature has drifted")
    drift_p_threshold: float = Field(0.01, gt=0, lt=1, description="KS / chi-squared p-value marking drift")
    cost_cpu_hour: Decimal = Field(Decimal("0.04"), ge=0, description="price of one CPU core busy for an hour")
    cost_gpu_hour: Decimal = Field(Decimal("3.00"), ge=0, description="price of one GPU held for an hour")
    cost_gb_hour: Decimal = Field(Decimal("0.005"), ge=0, description="price of one GB of memory held for an hour")
    cost_currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code the prices are in")

    @field_validator("database_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not value or not value.replace("_", "").isalnum() or value[0].isdigit() or value != value.lower():
            raise ValueError("database_schema must be a plain lower-case SQL identifier")
        return value

    @model_validator(mode="after")
    def _witnesses_and_policy_parse(self) -> Settings:
        try:
            configured_policy(self.witnesses, self.witness_policy)
        except PolicyError as exc:
            raise ValueError(exc.detail) from None
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        if self.key_uri.get_secret_value() and self.key_path is not None:
            raise ValueError("set MLLEDGER_KEY_URI (a key in a token) or MLLEDGER_KEY_PATH (a key file), not both")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and not self.database_url.startswith("postgresql"):
            raise ValueError("production needs MLLEDGER_DATABASE_URL=postgresql://...")
        return self

    @property
    def rates(self) -> Rates:
        """The prices that turn a run's resources into its cost (``domain.usage``)."""
        return Rates(self.cost_cpu_hour, self.cost_gpu_hour, self.cost_gb_hour, self.cost_currency)

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ledger.sqlite3').resolve()}"

    @property
    def is_postgres(self) -> bool:
        """True when the ledger lives in PostgreSQL."""
        return self.resolved_database_url.startswith(("postgresql", "postgres://"))

    @property
    def blobs_dir(self) -> Path:
        """Root of the content-addressed store."""
        return self.data_dir / "blobs"

    @property
    def resolved_import_dir(self) -> Path:
        """Directory that register-by-URI may read from."""
        return (self.import_dir or self.data_dir / "import").resolve()

    @property
    def keys_dir(self) -> Path:
        """Directory of the ledger's key files."""
        return self.key_path.parent if self.key_path else self.data_dir / "keys"
