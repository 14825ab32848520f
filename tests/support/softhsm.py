"""A SoftHSM2 token of its own for a test session, with Ed25519 keys in it.

The token lives in a temporary directory that ``SOFTHSM2_CONF`` points to (set
for this process, and so for the CLI and witness subprocesses the tests start),
created with ``softhsm2-util --init-token --free`` and filled with
``pkcs11-tool --keypairgen --key-type EC:edwards25519``, the commands the
README gives. It is made before this process loads the module, which reads its
configuration once.

Debian's ``softhsm2`` and ``opensc`` bring the tools (``make softhsm``
installs them as root). Without them the tests skip saying so, where they
could not be installed (not root); as root, or under CI=true, they fail.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from domain.integrity.keys import load_public_key_pem, raw_public_key

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "mlledger-test"
PIN = "4711-test"
SO_PIN = "so-5678"
KEYS = ("ledger", "ledger-next", "witness-a", "witness-b")
"""The Ed25519 key pairs in the token, by label."""


@dataclass(frozen=True)
class SoftHsm:
    """The session's token: where its configuration is, and URIs of its keys."""

    conf: Path
    pin_file: Path

    def uri(self, label: str = "ledger", *, pin: str = "value") -> str:
        """The key's RFC 7512 URI; ``pin`` is ``value`` (pin-value=...), ``source`` (a PIN file) or ``none``."""
        base = f"pkcs11:token={TOKEN};object={label}"
        if pin == "value":
            return f"{base}?pin-value={PIN}"
        if pin == "source":
            return f"{base}?pin-source=file:{self.pin_file}"
        return base

    def env(self) -> dict[str, str]:
        """What a subprocess needs to see the token."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def public_key(self, label: str) -> bytes:
        """The key's raw public key as pkcs11-tool reads it out of the token (not through the service's code)."""
        done = subprocess.run(
            [
                *("pkcs11-tool", "--module", MODULE, "--token-label", TOKEN),
                *("--read-object", "--type", "pubkey", "--label", label),
            ],
            env={**os.environ, **self.env()},
            capture_output=True,
            timeout=60,
            check=True,
        )
        return raw_public_key(load_public_key_pem(done.stdout))


def _missing() -> str | None:
    for tool in ("softhsm2-util", "pkcs11-tool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages softhsm2 and opensc; run `make softhsm` as root)"
    if not Path(MODULE).exists():
        return f"the SoftHSM2 module {MODULE} is missing (Debian package softhsm2; run `make softhsm` as root)"
    return None


def _run(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()}")


@cache
def _make() -> SoftHsm:
    root = Path(tempfile.mkdtemp(prefix="mlledger-softhsm-"))
    atexit.register(shutil.rmtree, root, True)
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
    )
    pin_file = root / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    env = {**os.environ}
    _run("softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN, env=env)
    for number, label in enumerate(KEYS, start=1):
        _run(
            "pkcs11-tool",
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:edwards25519",
            "--label",
            label,
            "--id",
            f"{number:02x}",
            env=env,
        )
    return SoftHsm(conf, pin_file)


def softhsm() -> SoftHsm:
    """The session's token, made on first use; skip (or fail as root or under CI) without SoftHSM2."""
    missing = _missing()
    if missing is not None:
        if os.geteuid() == 0 or os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return _make()
