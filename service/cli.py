"""The ``mlledger`` command line.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from domain.errors import LedgerError
from domain.integrity.checkpoint import verifier_key
from domain.integrity.keys import (
    InvalidKey,
    Signer,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_pem,
    public_key_pem,
    raw_public_key,
)
from service.settings import Settings
from service.store import keystore

if TYPE_CHECKING:
    from mlledger import LedgerClient
    from service.bootstrap import ReadModelProjector, Services

app = typer.Typer(
    name="mlledger",
    help="ML Ledger: a signed, hash-chained, transparency-logged record of machine learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Signing keys: the ledger's, and your own (generate, register).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
witness_app = typer.Typer(help="A transparency-log witness (C2SP tlog-witness).", no_args_is_help=True)
app.add_typer(witness_app, name="witness")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mlledger: error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(func: F) -> F:
    """Turn expected failures into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise _fail(f"invalid setting MLLEDGER_{field.upper()}: {first['msg']}") from None
        except (LedgerError, keystore.KeyFileError, KeyError, ValueError, OSError) as exc:
            text = exc.detail if isinstance(exc, LedgerError) else str(exc).strip("'\"")
            raise _fail(text) from None
        except Exception as exc:  # database unreachable and the like
            raise _fail(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    return Settings()


def _open_existing(settings: Settings) -> Services:
    """Open a ledger that ``mlledger migrate`` created; refuse, creating nothing, where there is none."""
    from service.bootstrap import open_services
    from service.store.revision import require_ledger

    require_ledger(settings)
    return open_services(settings)


def _open_projector(settings: Settings) -> ReadModelProjector:
    """Open an existing ledger's event log and read models with no key (see :func:`_open_existing`)."""
    from service.bootstrap import open_projector
    from service.store.revision import require_ledger

    require_ledger(settings)
    return open_projector(settings)


@app.command()
@friendly_errors
def migrate() -> None:
    """Create or upgrade every table (read models and the event store)."""
    from service.bootstrap import open_services

    settings = _settings()
    services = open_services(settings, migrate=True)
    try:
        if services.key_created:
            typer.echo(f"created ledger key {services.signer.key_id} in {settings.keys_dir}")
        _announce_admin_key(services.admin_api_key)
        typer.echo(f"database ready: {_describe(settings)}")
    finally:
        services.close()


@app.command()
@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    projector: Annotated[bool, typer.Option(help="run the projector in this process")] = True,
    runner: Annotated[bool, typer.Option(help="run a runner (device auto) in this process")] = True,
    access_log: Annotated[bool, typer.Option(help="log every HTTP request")] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="API processes (more than 1 needs --no-projector --no-runner)")
    ] = 1,
) -> None:
    """Run the HTTP API (with the projector and a runner in-process by default)."""
    import uvicorn

    from service.app import create_app
    from service.bootstrap import check_migrated, open_services

    settings = _settings()
    check_migrated(settings)
    if workers > 1 and (projector or runner):
        raise _fail(
            "--workers above 1 serves the API only: add --no-projector --no-runner and run "
            "'mlledger project --follow' and 'mlledger runner' beside it"
        )
    typer.echo(f"ML Ledger on http://{host}:{port} (docs at /docs), database {_describe(settings)}")
    if workers > 1:
        opened = open_services(settings)  # the ledger key and the first admin, once, before the workers start
        _announce_admin_key(opened.admin_api_key)
        opened.close()
        from service.api.workers import CannotListen, run_workers

        try:
            run_workers(
                "service.app:api_only",
                host=host,
                port=port,
                workers=workers,
                log_level="info",
                access_log=access_log,
            )
        except CannotListen as exc:
            raise _fail(str(exc)) from None
        return
    app_ = create_app(settings, run_projector=projector, run_runner=runner)
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=access_log)


@app.command()
@friendly_errors
def runner(
    ledger_url: Annotated[
        str | None, typer.Option(envvar="MLLEDGER_LEDGER_URL", help="the ledger service's URL, e.g. http://ledger:8000")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            envvar="MLLEDGER_RUNNER_KEY_FILE",
            help="this runner's Ed25519 signing key (PEM; created 0600 and registered on first start)",
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="local (worker processes here) or ray (a Ray job per run)")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(envvar="MLLEDGER_RAY_ADDRESS", help="the Ray dashboard/Jobs API, host:port")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="runs executed at once")] = 1,
    work_dir: Annotated[Path | None, typer.Option(help="where runs execute (default: a private temp folder)")] = None,
) -> None:
    """Claim requested runs through the ledger's API and execute them until stopped (SIGTERM/Ctrl-C
    finishes active runs). The runner holds no ledger key and no database credentials: it authenticates
    with the API key of a principal with the runner role (MLLEDGER_RUNNER_API_KEY) and signs each result
    with its own key."""
    import signal
    import threading

    if not ledger_url:
        raise _fail(
            "a runner talks to the ledger over HTTP: give --ledger-url (or MLLEDGER_LEDGER_URL) and the API key "
            "of a runner principal in MLLEDGER_RUNNER_API_KEY (the runner inside 'mlledger serve' needs neither)"
        )
    api_key = os.environ.get("MLLEDGER_RUNNER_API_KEY", "").strip()
    if not api_key:
        raise _fail("MLLEDGER_RUNNER_API_KEY is not set: the runner authenticates with a runner principal's API key")
    if backend not in ("local", "ray"):
        raise _fail(f"--backend must be local or ray, not {backend!r}")
    if backend == "ray" and not ray_address:
        raise _fail("--backend ray needs --ray-address (the Ray dashboard's host:port)")
    if concurrency >= (os.cpu_count() or 1):
        # Each worker gets one core anyway. OpenBLAS re-creates its thread pool in every forked
        # worker from the size it had at load, and those threads spin for nothing. Sized at
        # one before numpy loads, the pool has no extra threads.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from service.runners.gateway import HttpGateway
    from service.runners.runner import Runner, default_say

    signer = _runner_key(key or Path.home() / ".mlledger" / "runner-key.pem")
    gateway = HttpGateway(ledger_url, api_key, signer)
    make_backend = None
    if backend == "ray":
        from service.runners.ray_backend import RayBackend

        address = str(ray_address)

        def make_backend(gateway: Any, work_dir: Path, concurrency: int) -> Any:
            return RayBackend(address, ledger_url=str(ledger_url))

    settings = Settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Runner(
        gateway,
        device=device,
        concurrency=concurrency,
        heartbeat_interval=settings.heartbeat_seconds,
        heartbeat_timeout=settings.heartbeat_timeout_seconds,
        work_dir=work_dir,
        backend=make_backend,
        say=default_say,
    ).run(stop)


def _runner_key(path: Path) -> Signer:
    """The runner's own signing key: loaded from ``path``, or created there (0600) on first start."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from service.common.private_files import replace_private

    if path.exists():
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise _fail(f"{path} is not a PEM private key: {exc}") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise _fail(f"{path} is not an Ed25519 private key")
        return Signer(loaded)
    signer = Signer.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_private(
        path,
        signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    typer.echo(f"created runner signing key {signer.key_id} in {path}", err=True)
    return signer


@app.command()
@friendly_errors
def project(
    rebuild: Annotated[str | None, typer.Option(help="drop and replay this projection")] = None,
    follow: Annotated[bool, typer.Option(help="keep projecting new events until stopped")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="project only this read model (repeatable; e.g. transparency_log): run several projector "
            "processes, each with its own read models, to use more cores",
        ),
    ] = None,
) -> None:
    """Bring read models up to date (or rebuild one from the log).

    Read models without the transparency log publish no checkpoint, so they are
    projected with no key: the ledger key and the subject KEK are not opened.
    """
    from service.ops.projector import ProjectorThread, publish_checkpoint_if_due, signs_checkpoints

    settings = _settings()
    signing = _open_existing(settings) if signs_checkpoints(only) else None
    services: Services | ReadModelProjector = signing or _open_projector(settings)
    try:
        unknown = sorted(set(only or ()) - set(services.runner.projections))
        if unknown:
            known = ", ".join(services.runner.projections)
            raise ValueError(f"--only: no read model named {', '.join(unknown)}; known: {known}")

        def progress(name: str, count: int) -> None:
            typer.echo(f"{name}: +{count} events", err=True)

        if rebuild:
            total = services.runner.rebuild(rebuild, progress)
            typer.echo(f"rebuilt {rebuild} from {total} events")
        elif only:
            total = services.runner.catch_up_together(list(dict.fromkeys(only)), progress)
            typer.echo(f"projected {total} events")
        else:
            total = services.runner.catch_up(progress=progress)
            typer.echo(f"projected {total} events")
        if signing is not None:
            checkpoint = publish_checkpoint_if_due(signing)
            if checkpoint is not None:
                typer.echo(f"checkpoint published at tree size {checkpoint.tree_size}")
        if follow:
            thread = ProjectorThread(services, only)
            thread.start()
            try:
                thread.join()
            except KeyboardInterrupt:
                thread.stop()
    finally:
        services.close()


@app.command()
@friendly_errors
def checkpoint() -> None:
    """Publish a signed checkpoint of the transparency log now and submit it to the configured witnesses.

    With witnesses (MLLEDGER_WITNESSES), the note printed carries the cosignatures
    they returned, and a line on stderr says whether they meet the witness policy.
    """
    from projections import transparency_log as tlog
    from service.ops.projector import publish_checkpoint_if_due
    from service.ops.witnessing import cosigned, submit_to_witnesses, witness_policy

    settings = _settings()
    services = _open_existing(settings)
    try:
        services.runner.catch_up()
        published = publish_checkpoint_if_due(services, force=True)
        policy = witness_policy(settings)
        if policy is None:
            if published is None:
                typer.echo("the latest checkpoint already covers the whole log")
            else:
                typer.echo(published.note, nl=False)
            return
        submit_to_witnesses(services)  # also brings witnesses that lag up to an older latest checkpoint
        with services.engine.connect() as conn:
            latest = tlog.latest_checkpoint(conn)
            view = cosigned(conn, latest, policy) if latest is not None else None
        if view is None:
            typer.echo("the log is empty: no checkpoint to publish")
            return
        if published is None:
            typer.echo("the latest checkpoint already covers the whole log", err=True)
        typer.echo(view.note, nl=False)
        names = ", ".join(view.cosigners) or "no witness"
        if view.witnessed:
            typer.echo(f"witnessed: cosigned by {names}, which meets the witness policy", err=True)
        else:
            missing = ", ".join(sorted(set(policy.witnesses) - set(view.cosigners)))
            typer.echo(
                f"not witnessed yet: cosigned by {names}; the witness policy needs more "
                f"(not cosigned by: {missing}); the projector keeps submitting",
                err=True,
            )
    finally:
        services.close()


@app.command()
@friendly_errors
def verify(
    public_key: Annotated[
        list[Path] | None,
        typer.Option(help="trusted ledger public key (PEM); default: the keys directory"),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes; default: every core")] = None,
    since_checkpoint: Annotated[
        bool,
        typer.Option(
            "--since-checkpoint",
            help="verify only what was recorded after the checkpoint the last successful run verified",
        ),
    ] = False,
    state: Annotated[
        Path | None,
        typer.Option(help="where the last verified checkpoint is kept; default: <data dir>/verified.json"),
    ] = None,
) -> None:
    """Check every hash, signature, chain, Merkle leaf, node and checkpoint."""
    from service.ops.verified_state import load_state, save_state, state_path
    from service.ops.verify import verify_ledger
    from service.ops.verify_since import verify_since_checkpoint
    from service.store.revision import require_ledger

    settings = _settings()
    require_ledger(settings)
    anchors = [raw_public_key(load_public_key_pem(p.read_bytes())) for p in public_key or []]
    if not anchors:
        anchors = _local_public_keys(settings)
    where = state_path(settings.data_dir, state)
    if since_checkpoint:
        report = verify_since_checkpoint(settings, load_state(where), anchors, workers=workers)
    else:
        report = verify_ledger(settings, anchors, workers=workers)
    if report.ok and report.state is not None:
        try:
            save_state(where, report.state)
        except OSError as exc:  # the verdict stands; only the next incremental run lacks its start
            typer.echo(f"warning: the verified checkpoint was not kept at {where}: {exc.strerror}", err=True)
    rate = report.events / report.seconds if report.seconds else 0.0
    first = report.first()
    if first is not None:
        typer.echo(f"FAILED: {first.describe()}")
        compromised = report.compromised()
        if compromised:
            typer.echo(f"{len(compromised)} event(s) signed by a revoked ledger key after its compromise:")
            for finding in compromised:
                typer.echo(f"  {finding.describe()}")
        others = len(report.findings) - 1 - len([f for f in compromised if f != first])
        if others > 0:
            typer.echo(f"({others} more finding(s) after the first)")
        raise typer.Exit(1)
    if report.since:
        typer.echo(f"checkpoint at tree size {report.since} verified before ({where}): consistent")
    typer.echo(
        f"OK: {report.events} events{' after it' if report.since else ''} in {report.aggregates} aggregates: "
        f"hashes, signatures, chains and versions verified with {len(report.keys)} ledger key(s)"
    )
    typer.echo(
        f"transparency log: {report.leaves} leaves, {report.checkpoints} checkpoint(s) verified"
        + (f", {report.unlogged} newest event(s) not yet logged" if report.unlogged else "")
    )
    if report.latest_checkpoint:
        typer.echo("latest checkpoint:")
        typer.echo(report.latest_checkpoint, nl=False)
    pace = f"{rate:,.0f} events/s, " if report.events >= 1000 else ""  # a rate over a few events says nothing
    typer.echo(f"verified in {report.seconds:.2f} s ({pace}{workers or os.cpu_count()} workers)")


def _local_public_keys(settings: Settings) -> list[bytes]:
    public_dir = settings.keys_dir / "public"
    return (
        [raw_public_key(load_public_key_pem(p.read_bytes())) for p in sorted(public_dir.glob("*.pem"))]
        if public_dir.is_dir()
        else []
    )


@app.command()
@friendly_errors
def export(
    model: Annotated[str, typer.Option(help="the model to export")],
    out: Annotated[Path, typer.Option(help="where to write the bundle (.zip)")],
    since: Annotated[str | None, typer.Option("--from", help="RFC 3339: predictions recorded at or after")] = None,
    until: Annotated[str | None, typer.Option("--to", help="RFC 3339: predictions recorded at or before")] = None,
    predictions: Annotated[str, typer.Option(help="all, sample or none")] = "all",
    sample_size: Annotated[int, typer.Option(help="most predictions a sample holds")] = 1_000,
    share_with: Annotated[list[str] | None, typer.Option(help="principal id to share with; repeatable")] = None,
) -> None:
    """Write a model's signed history, proofs, keys, manifests and reports to a bundle a regulator can verify."""
    from service.exports.bundle import export_bundle
    from service.exports.scope import ExportRequest

    if not out.parent.is_dir():
        raise _fail(f"the directory of {out} does not exist")
    request = ExportRequest.of(model, since, until, predictions, sample_size, share_with or [])
    services = _open_existing(_settings())
    try:
        result = export_bundle(services, request, actor="system:cli", destination=out)
    finally:
        services.close()
    typer.echo(f"exported {result.events} events of {model} to {out}: {result.size:,} bytes, {result.bundle_digest}")
    typer.echo(f"export {result.export_id} recorded at position {result.position} ({result.seconds:.2f} s)")


@app.command("verify-bundle")
@friendly_errors
def verify_bundle(
    bundle: Annotated[Path, typer.Argument(help="the bundle (.zip)")],
    public_key: Annotated[
        list[Path] | None, typer.Option(help="a ledger public key you trust (PEM); repeatable")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="processes checking signatures")] = None,
    max_bytes: Annotated[int | None, typer.Option(min=1, help="refuse a bundle larger than this")] = None,
    extract: Annotated[Path | None, typer.Option(help="after verifying, write the files under this directory")] = None,
    witness_policy: Annotated[
        Path | None, typer.Option(help="the C2SP tlog-policy you trust for the checkpoints' cosignatures")
    ] = None,
) -> None:
    """Verify an export bundle offline (the same checks as the bundle's own verify_bundle.py)."""
    from service.exports import verify_bundle as checker

    argv = [str(bundle), *(arg for key in public_key or [] for arg in ("--public-key", str(key)))]
    argv += ["--workers", str(workers)] if workers else []
    argv += ["--max-bytes", str(max_bytes)] if max_bytes else []
    argv += ["--extract", str(extract)] if extract else []
    argv += ["--witness-policy", str(witness_policy)] if witness_policy else []
    code = checker.main(argv)
    if code:
        raise typer.Exit(code)


@app.command()
@friendly_errors
def demo() -> None:
    """Run a whole governed lifecycle on this ledger and print the lineage."""
    from service.bootstrap import open_services
    from service.demo import run_demo

    settings = _settings()
    services = open_services(settings, migrate=True)
    try:
        _announce_admin_key(services.admin_api_key)
        run_demo(services, say=typer.echo)
    finally:
        services.close()


@keys_app.command("show")
@friendly_errors
def keys_show() -> None:
    """Print the current ledger public key (PEM), its key id and where the private key lives."""
    settings = _settings()
    signer, created = keystore.open_ledger_key(settings)
    if created:
        typer.echo(f"created ledger key in {settings.keys_dir}", err=True)
    typer.echo(f"key id: {signer.key_id}")
    typer.echo(f"held in: {signer.source}")
    typer.echo(f"checkpoint verifier key: {verifier_key(settings.log_origin, raw_public_key(signer.public_key))}")
    typer.echo(public_key_pem(signer.public_key), nl=False)


@keys_app.command("rotate")
@friendly_errors
def keys_rotate(
    reason: Annotated[str, typer.Option(help="why the key is rotated (recorded)")] = "scheduled rotation",
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="PKCS11_URI",
            help="rotate to this key in a PKCS#11 token (pkcs11:token=...;object=...) instead of a new key file; "
            "its PIN may come from MLLEDGER_KEY_URI",
        ),
    ] = None,
) -> None:
    """Rotate the ledger key: the old key signs the new one into the keyring.

    Without --to a new key file is generated (the file key only); with --to the
    ledger moves to a key object already created in a token, and the retired
    key file, if any, is removed.
    """
    from service.bootstrap import pending_key_path
    from service.common.pkcs11 import parse_pkcs11_uri

    settings = _settings()
    services = _open_existing(settings)
    try:
        old = services.signer
        if to is not None:
            uri = parse_pkcs11_uri(to)
            token_key = keystore.open_uri(settings, uri)
            if token_key.key_id == old.key_id:
                raise _fail(f"{token_key.source} is the current ledger key already")
            keystore.stage_token_rotation(settings, uri)
            try:
                services.ledger.rotate_key(token_key, reason=reason, actor="system:cli")
            except Exception:
                keystore.unstage_token_rotation(settings)
                raise
            keystore.finish_token_rotation(settings, token_key)
            typer.echo(f"rotated ledger key {old.key_id} -> {token_key.key_id} (held in {token_key.source})")
            typer.echo(
                f"set MLLEDGER_KEY_URI to {uri.without_pin_value().text()} (with its PIN) and restart every process"
            )
            return
        if not isinstance(old, Signer):
            raise _fail(
                f"the ledger key is held in a PKCS#11 token ({old.source}); a new key file would take it out: "
                "create a new Ed25519 key object in the token and run 'mlledger keys rotate --to pkcs11:...'"
            )
        new = Signer.generate()
        pending = pending_key_path(settings)
        keystore.write_private(pending, new)
        services.ledger.rotate_key(new, reason=reason, actor="system:cli")
        keystore.replace_current(settings.keys_dir, settings.key_path, new)
        pending.unlink(missing_ok=True)
        typer.echo(f"rotated ledger key {old.key_id} -> {key_id(new.public_key)}")
    finally:
        services.close()


@witness_app.command("serve")
@friendly_errors
def witness_serve(
    state: Annotated[Path, typer.Option(help="directory of the witness's key and state")],
    log: Annotated[list[str] | None, typer.Option(help="a log to follow: ORIGIN=VKEY (repeatable)")] = None,
    config: Annotated[Path | None, typer.Option(help="file of 'log <vkey>' lines (tlog-policy style)")] = None,
    name: Annotated[str | None, typer.Option(help="the witness's key name (fixed when its key is created)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8080,
    key_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLLEDGER_WITNESS_KEY_URI",
            help="the witness key in a PKCS#11 token (pkcs11:token=...;object=...?pin-source=file:...); "
            "default: a key file in the state directory",
            show_default=False,
        ),
    ] = None,
    pkcs11_module: Annotated[
        str | None,
        typer.Option(envvar="MLLEDGER_PKCS11_MODULE", help="PKCS#11 module for a key URI without module-path"),
    ] = None,
) -> None:
    """Run a witness that cosigns the checkpoints of the given logs (POST /add-checkpoint)."""
    from service.witness.server import make_server, open_witness

    witness = open_witness(state, name, log or [], config, key_uri, pkcs11_module)
    server = make_server(witness, host, port)
    bound_host, bound_port = server.server_address[:2]
    typer.echo(f"witness {witness.identity.vkey}")
    typer.echo(f"listening on http://{bound_host!s}:{bound_port}", nl=True)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(
    key: Annotated[str, typer.Argument(metavar="KEY_ID", help="the retired ledger key that was compromised")],
    compromised_since: Annotated[
        int, typer.Option(help="the ledger position after which the key is no longer trusted")
    ],
    reason: Annotated[str, typer.Option(help="why the key is revoked (recorded)")] = "key compromised",
) -> None:
    """Record that a retired ledger key was compromised; verify then names what it signed after that position."""
    settings = _settings()
    services = _open_existing(settings)
    try:
        written = services.ledger.revoke_key(key, compromised_since, reason=reason, actor="system:cli")
        typer.echo(
            f"revoked ledger key {key}: events it signed after position {compromised_since} are not trusted "
            f"(recorded at position {written.position})"
        )
    finally:
        services.close()


# -- your own signing key, and signed decisions ------------------------------------
UrlOption = Annotated[str, typer.Option("--url", envvar="MLLEDGER_URL", help="the ledger's URL (or MLLEDGER_URL)")]
ApiKeyOption = Annotated[
    str,
    typer.Option("--api-key", envvar="MLLEDGER_API_KEY", help="your API key (or MLLEDGER_API_KEY)", show_default=False),
]
KeyFileOption = Annotated[Path, typer.Option("--key", help="your private key (PEM), from 'mlledger keys generate'")]


def _client(url: str, api_key: str) -> LedgerClient:
    if not api_key:
        raise _fail("no API key: pass --api-key or set MLLEDGER_API_KEY")
    from mlledger import LedgerClient

    return LedgerClient(url, api_key)


def _own_key(path: Path) -> Signer:
    if not path.is_file():
        raise _fail(f"no key file at {path}")
    try:
        return Signer(load_private_key_pem(path.read_bytes()))
    except InvalidKey as exc:
        raise _fail(f"{path} is not an Ed25519 private key in PEM: {exc.detail}") from None


def _answered(call: Callable[[], T]) -> T:
    """The service's answer; its problem (or an unreachable service) as one line and exit code 1."""
    from mlledger import LedgerClientError

    try:
        return call()
    except LedgerClientError as exc:
        raise _fail(str(exc), code=1) from None
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the ledger: {exc}", code=1) from None


@keys_app.command("generate")
@friendly_errors
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="where to write your private key (PEM, mode 0600)")],
) -> None:
    """Create your own Ed25519 signing key (to sign approvals); it never leaves this machine."""
    private_key = Ed25519PrivateKey.generate()
    try:
        handle = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _fail(f"{out} exists; refusing to overwrite a key") from None
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(private_key_pem(private_key))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    signer = Signer(private_key)
    typer.echo(f"wrote your private key to {out} (mode 0600); keep it to yourself")
    typer.echo(f"key id: {signer.key_id}")
    typer.echo(public_key_pem(signer.public_key), nl=False)
    typer.echo(f"register it as yours: mlledger keys register --key {out}  (with MLLEDGER_URL and MLLEDGER_API_KEY)")


@keys_app.command("register")
@friendly_errors
def keys_register(key: KeyFileOption, url: UrlOption = "http://127.0.0.1:8000", api_key: ApiKeyOption = "") -> None:
    """Register your key's public half with the ledger, proving you hold the private half."""
    signer, client = _own_key(key), _client(url, api_key)
    with client:
        me = _answered(client.me)
        registered = _answered(lambda: client.register_signing_key(me.id, signer))
    typer.echo(f"registered key {registered} for {me.name}")


def _decide(decision: str, model: str, version: int, key: Path, reason: str, url: str, api_key: str) -> None:
    signer, client = _own_key(key), _client(url, api_key)
    with client:
        written = _answered(lambda: client.decide(model, version, signer, signer.key_id, decision, reason))
        state = _answered(lambda: client.model_version(model, version)).state
    verb = "approved" if decision == "approve" else "rejected"
    typer.echo(f"{verb} {model} version {version} (ledger position {written.position}); the version is now {state}")


@app.command()
@friendly_errors
def approve(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number", min=1)],
    key: KeyFileOption,
    reason: Annotated[str, typer.Option("--reason", help="why (signed and recorded)")],
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = "",
) -> None:
    """Approve a model version: the statement is signed here with your key and recorded."""
    _decide("approve", model, version, key, reason, url, api_key)


@app.command()
@friendly_errors
def reject(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number", min=1)],
    key: KeyFileOption,
    reason: Annotated[str, typer.Option("--reason", help="why (signed and recorded)")],
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = "",
) -> None:
    """Reject a model version: the statement is signed here with your key and recorded."""
    _decide("reject", model, version, key, reason, url, api_key)


def _announce_admin_key(token: str | None) -> None:
    if token:
        typer.echo("created the first admin; its API key is shown only this once:")
        typer.echo(f"  {token}")
        typer.echo("use it as 'Authorization: Bearer <key>' (or set MLLEDGER_ADMIN_API_KEY before first start)")


def _describe(settings: Settings) -> str:
    if settings.is_postgres:
        return f"PostgreSQL (schema {settings.database_schema})"
    return f"SQLite at {settings.resolved_database_url.removeprefix('sqlite:///')}"


def main() -> None:
    """Entry point with logging configured."""
    logging.basicConfig(level=os.environ.get("MLLEDGER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    app()
