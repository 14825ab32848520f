"""RFC 7512 ``pkcs11:`` URIs that name a key in a PKCS#11 token, and the module that holds it.

::

    pkcs11:token=mlledger;object=ledger?pin-source=file:/run/secrets/hsm-pin
    pkcs11:token=mlledger;object=ledger?pin-value=1234&module-path=/usr/lib/softhsm/libsofthsm2.so

The path names the token (``token``, ``serial``, ``slot-id``, ...) and the key
(``object`` label and/or ``id``); the query says how to log in (``pin-value``,
or ``pin-source``, a file holding the PIN) and which module to load
(``module-path``). A ``pin-value`` never shows in messages (:meth:`Pkcs11Uri.redacted`)
and is never written to disk (:meth:`Pkcs11Uri.without_pin_value`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
"""Debian's SoftHSM2 module (package ``softhsm2``), used when neither the URI nor the settings name one."""

_PATH_ATTRIBUTES = {
    "token",
    "object",
    "id",
    "serial",
    "manufacturer",
    "model",
    "type",
    "slot-id",
    "slot-description",
    "slot-manufacturer",
    "library-manufacturer",
    "library-description",
    "library-version",
}
_QUERY_ATTRIBUTES = {"pin-value", "pin-source", "module-name", "module-path"}


class TokenKeyError(ValueError):
    """A PKCS#11 URI that is malformed, or a token key that cannot be found, logged in to or used."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI that find a key: path attributes and the query's PIN and module."""

    path: tuple[tuple[str, str], ...]
    pin_value: str | None = None
    pin_source: str | None = None
    module_path: str | None = None
    module_name: str | None = None

    def get(self, name: str) -> str | None:
        """The value of path attribute ``name`` (decoded), or None."""
        return next((value for key, value in self.path if key == name), None)

    @property
    def has_pin(self) -> bool:
        """Whether the URI says how to log in."""
        return self.pin_value is not None or self.pin_source is not None

    def pin(self) -> str:
        """The user PIN: ``pin-value``, or the first line of the file ``pin-source`` names."""
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is None:
            raise TokenKeyError(f"{self.redacted()} gives no PIN: add pin-value=... or pin-source=file:...")
        source = self.pin_source
        if source.startswith("file:"):
            source = source.removeprefix("file:")
            if source.startswith("//"):  # file:///path (an empty host) or file://localhost/path
                source = "/" + source[2:].partition("/")[2]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenKeyError(f"cannot read the PIN file {source}: {exc.strerror}") from None
        return text.splitlines()[0] if text.strip() else ""

    def with_login_of(self, other: Pkcs11Uri | None) -> Pkcs11Uri:
        """This URI, taking the PIN and module from ``other`` where it names none (same operator, same token)."""
        if other is None:
            return self
        return replace(
            self,
            pin_value=self.pin_value if self.has_pin else other.pin_value,
            pin_source=self.pin_source if self.has_pin else other.pin_source,
            module_path=self.module_path or other.module_path,
            module_name=self.module_name or other.module_name,
        )

    def without_pin_value(self) -> Pkcs11Uri:
        """The URI less ``pin-value`` (``pin-source``, a file's name, stays): what may be written to disk."""
        return replace(self, pin_value=None)

    def text(self) -> str:
        """The URI as text (percent-encoded where needed), with the PIN if it has one."""
        path = ";".join(f"{k}={quote(v, safe='')}" for k, v in self.path)
        query = [
            (k, v)
            for k, v in (
                ("pin-source", self.pin_source),
                ("pin-value", self.pin_value),
                ("module-name", self.module_name),
                ("module-path", self.module_path),
            )
            if v is not None
        ]
        tail = "&".join(f"{k}={quote(v, safe='/:')}" for k, v in query)
        return f"pkcs11:{path}" + (f"?{tail}" if tail else "")

    def redacted(self) -> str:
        """The URI for messages and logs: a ``pin-value`` shows as ``***``."""
        shown = self if self.pin_value is None else replace(self, pin_value="***")
        return shown.text().replace("pin-value=%2A%2A%2A", "pin-value=***")


def _decode(text: str, what: str) -> str:
    if any(c in text for c in ' "<>`{}|\\^'):
        raise TokenKeyError(f"the PKCS#11 URI has a character that must be percent-encoded in {what}")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise TokenKeyError(f"the PKCS#11 URI has percent-encoded bytes that are not UTF-8 in {what}") from None


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Read an RFC 7512 ``pkcs11:`` URI; refuse unknown or repeated attributes (a typo would find nothing)."""
    text = uri.strip()
    if text[:7].lower() != "pkcs11:":
        raise TokenKeyError("a PKCS#11 key URI starts with 'pkcs11:' (RFC 7512)")
    body, _, query = text[7:].partition("?")
    path: list[tuple[str, str]] = []
    for part in filter(None, body.split(";")):
        name, sep, value = part.partition("=")
        name = name.lower()
        if not sep or not name:
            raise TokenKeyError(f"the PKCS#11 URI has a path attribute without a value: {name or part!r}")
        if name not in _PATH_ATTRIBUTES and not name.startswith("x-"):
            raise TokenKeyError(f"the PKCS#11 URI has the unknown path attribute {name!r}")
        if any(name == known for known, _ in path):
            raise TokenKeyError(f"the PKCS#11 URI repeats the attribute {name!r}")
        path.append((name, _decode(value, name)))
    found: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, sep, value = part.partition("=")
        name = name.lower()
        if not sep:
            raise TokenKeyError(f"the PKCS#11 URI has a query attribute without a value: {name!r}")
        if name not in _QUERY_ATTRIBUTES and not name.startswith("x-"):
            raise TokenKeyError(f"the PKCS#11 URI has the unknown query attribute {name!r}")
        if name in found:
            raise TokenKeyError(f"the PKCS#11 URI repeats the attribute {name!r}")
        found[name] = _decode(value, name)
    if "pin-value" in found and "pin-source" in found:
        raise TokenKeyError("the PKCS#11 URI gives both pin-value and pin-source: give one")
    parsed = Pkcs11Uri(
        path=tuple(path),
        pin_value=found.get("pin-value"),
        pin_source=found.get("pin-source"),
        module_path=found.get("module-path"),
        module_name=found.get("module-name"),
    )
    if parsed.get("object") is None and parsed.get("id") is None:
        raise TokenKeyError(f"{parsed.redacted()} names no key: add object=<label> or id=<%-encoded id>")
    if parsed.get("type") not in (None, "private"):
        raise TokenKeyError(f"{parsed.redacted()} names a {parsed.get('type')} object; the signing key is private")
    return parsed


def module_file(uri: Pkcs11Uri, default_module: str) -> str:
    """The module to load: ``module-path`` (a file, or a directory holding ``module-name``), else the default."""
    if uri.module_path:
        path = Path(uri.module_path)
        if uri.module_name and path.is_dir():
            return str(path / (uri.module_name if "." in uri.module_name else f"{uri.module_name}.so"))
        return str(path)
    return default_module or DEFAULT_MODULE
