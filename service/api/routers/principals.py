"""Principals, roles, signing keys and API keys."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, Field

from domain.errors import Forbidden, SigningKeyNotOwn
from domain.permissions import Action, allowed
from domain.principal import Principal
from domain.roles import Role
from service.api.deps import AdminCaller, CurrentCaller, LedgerDep, outcome, written
from service.api.schemas import ChangeResult, Reason, WriteResult
from service.application.auth import Caller, new_token

router = APIRouter(prefix="/v1", tags=["principals"])
IdPath = Annotated[str, Path(min_length=1, max_length=64)]


class PrincipalCreate(BaseModel):
    """A new user or service account."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["user", "service"] = "user"
    roles: list[Role] = Field(default_factory=list, max_length=7)


class PrincipalDetail(BaseModel):
    """A principal as the API shows it."""

    id: str
    name: str
    kind: str
    roles: list[str]
    active: bool
    signing_keys: list[str] = Field(description="key ids of registered signing keys")
    revoked_signing_keys: list[str] = Field(
        default_factory=list, description="key ids of revoked signing keys: statements they sign are refused"
    )


class RoleChange(BaseModel):
    """A role to grant, and why (recorded with a proposal when a second admin must confirm)."""

    role: Role
    reason: str = Field("", max_length=2000)


class SigningKeyCreate(BaseModel):
    """An Ed25519 public key in PEM form, with its owner's proof of possession."""

    public_key_pem: str = Field(min_length=1, max_length=2000)
    proof: str = Field(
        min_length=1,
        max_length=200,
        description="base64 Ed25519 signature, by the key itself, of the RFC 8785 JSON of "
        '{"type": "mlledger.signing-key-possession.v1", "principal_id": <your id>, "key_id": <the key id>}',
    )


class SigningKeyResult(WriteResult):
    """The registered key's id."""

    key_id: str


class ApiKeyCreate(BaseModel):
    """A label to tell keys apart, and why (recorded with a proposal when a second admin must confirm)."""

    label: str = Field("", max_length=200)
    reason: str = Field("", max_length=2000)


def _self_or_admin(principal_id: IdPath, caller: CurrentCaller) -> Caller:
    """The principal itself, or an admin."""
    if principal_id != caller.id and not allowed(Action.MANAGE_PRINCIPALS, caller.roles):
        raise Forbidden("only admins may act on other principals")
    return caller


SelfOrAdmin = Annotated[Caller, Depends(_self_or_admin)]


def _self_only(principal_id: IdPath, caller: CurrentCaller) -> Caller:
    """The principal itself: nobody else, an admin included."""
    if principal_id != caller.id:
        raise SigningKeyNotOwn(
            "a signing key is registered by its owner only, with proof of possession; nobody registers one for "
            "someone else, an admin included",
            field="principal_id",
        )
    return caller


SelfOnly = Annotated[Caller, Depends(_self_only)]


def _public(principal: Principal) -> PrincipalDetail:
    return PrincipalDetail(
        id=str(principal.id),
        name=principal.name,
        kind=principal.kind,
        roles=list(principal.roles),
        active=principal.active,
        signing_keys=sorted(principal.signing_keys),
        revoked_signing_keys=sorted(principal.revoked_signing_keys),
    )


@router.get("/me", response_model=PrincipalDetail)
def me(caller: CurrentCaller, ledger: LedgerDep) -> PrincipalDetail:
    """The authenticated principal."""
    return _public(ledger.get(caller.id, Principal))


@router.post("/principals", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def create_principal(body: PrincipalCreate, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Register a user or service account (admin); ``admin`` or ``approver`` among its roles only in the bootstrap."""
    result = ledger.register_principal_as_admin(body.name, body.kind, [r.value for r in body.roles], actor=caller.actor)
    return written(response, result)


@router.get("/principals/{principal_id}", response_model=PrincipalDetail)
def get_principal(principal_id: IdPath, caller: SelfOrAdmin, ledger: LedgerDep) -> PrincipalDetail:
    """A principal (admin, or the principal itself)."""
    return _public(ledger.get(principal_id, Principal))


@router.post("/principals/{principal_id}/roles", response_model=ChangeResult)
def grant_role(
    principal_id: IdPath, body: RoleChange, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Grant a role (admin); ``admin`` or ``approver`` is proposed (202) until another admin confirms it."""
    return outcome(response, ledger.request_role(principal_id, body.role.value, body.reason, actor=caller.actor))


@router.delete("/principals/{principal_id}/roles/{role}", response_model=WriteResult)
def revoke_role(principal_id: IdPath, role: Role, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Revoke a role (admin)."""
    return written(response, ledger.revoke_role(principal_id, role.value, actor=caller.actor))


@router.post("/principals/{principal_id}/deactivate", response_model=WriteResult)
def deactivate(
    principal_id: IdPath, body: Reason, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Deactivate a principal; its keys stop working at once (admin)."""
    return written(response, ledger.deactivate_principal(principal_id, body.reason, actor=caller.actor))


@router.post(
    "/principals/{principal_id}/signing-keys", response_model=SigningKeyResult, status_code=status.HTTP_201_CREATED
)
def register_signing_key(
    principal_id: IdPath, body: SigningKeyCreate, caller: SelfOnly, ledger: LedgerDep, response: Response
) -> object:
    """Register your own public signing key, with proof of possession (the principal itself only)."""
    key_id, result = ledger.register_signing_key(principal_id, body.public_key_pem, body.proof, actor=caller.actor)
    return {**written(response, result), "key_id": key_id}


@router.post("/principals/{principal_id}/signing-keys/{key_id}/revoke", response_model=WriteResult)
def revoke_signing_key(
    principal_id: IdPath,
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: Reason,
    caller: SelfOrAdmin,
    ledger: LedgerDep,
    response: Response,
) -> object:
    """Revoke a signing key (the principal itself, or an admin): statements it signs are refused from now on."""
    return written(response, ledger.revoke_signing_key(principal_id, key_id, body.reason, actor=caller.actor))


@router.post("/principals/{principal_id}/api-keys", response_model=ChangeResult, status_code=status.HTTP_201_CREATED)
def issue_api_key(
    principal_id: IdPath, body: ApiKeyCreate, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Issue an API key (admin): your own at once; someone else's is proposed (202) until another admin
    confirms it, and the confirming admin receives the key. Shown once, stored only as a digest."""
    token = new_token()
    return outcome(response, ledger.request_api_key(principal_id, token, body.label, body.reason, actor=caller.actor))


@router.delete("/api-keys/{key_id}", response_model=WriteResult)
def revoke_api_key(key_id: IdPath, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Revoke an API key by its id (admin)."""
    return written(response, ledger.revoke_api_key(key_id, "revoked by an admin", actor=caller.actor))
