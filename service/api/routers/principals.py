"""Principals, roles, signing keys and API keys."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, Field

from domain.errors import Forbidden
from domain.permissions import Action, allowed
from domain.principal import Principal
from domain.roles import Role
from service.api.deps import AdminCaller, CurrentCaller, LedgerDep, written
from service.api.schemas import Reason, WriteResult
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


class RoleChange(BaseModel):
    """A role to grant."""

    role: Role


class SigningKeyCreate(BaseModel):
    """An Ed25519 public key in PEM form."""

    public_key_pem: str = Field(min_length=1, max_length=2000)


class SigningKeyResult(WriteResult):
    """The registered key's id."""

    key_id: str


class ApiKeyCreate(BaseModel):
    """A label to tell keys apart."""

    label: str = Field("", max_length=200)


class ApiKeyIssued(WriteResult):
    """The new key: shown this once, stored only as a digest."""

    api_key: str


def _self_or_admin(principal_id: IdPath, caller: CurrentCaller) -> Caller:
    """The principal itself, or an admin."""
    if principal_id != caller.id and not allowed(Action.MANAGE_PRINCIPALS, caller.roles):
        raise Forbidden("only admins may act on other principals")
    return caller


SelfOrAdmin = Annotated[Caller, Depends(_self_or_admin)]


def _public(principal: Principal) -> PrincipalDetail:
    return PrincipalDetail(
        id=str(principal.id),
        name=principal.name,
        kind=principal.kind,
        roles=list(principal.roles),
        active=principal.active,
        signing_keys=sorted(principal.signing_keys),
    )


@router.get("/me", response_model=PrincipalDetail)
def me(caller: CurrentCaller, ledger: LedgerDep) -> PrincipalDetail:
    """The authenticated principal."""
    return _public(ledger.get(caller.id, Principal))


@router.post("/principals", response_model=WriteResult, status_code=status.HTTP_201_CREATED)
def create_principal(body: PrincipalCreate, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Register a user or service account (admin)."""
    result = ledger.register_principal(body.name, body.kind, [r.value for r in body.roles], actor=caller.actor)
    return written(response, result)


@router.get("/principals/{principal_id}", response_model=PrincipalDetail)
def get_principal(principal_id: IdPath, caller: SelfOrAdmin, ledger: LedgerDep) -> PrincipalDetail:
    """A principal (admin, or the principal itself)."""
    return _public(ledger.get(principal_id, Principal))


@router.post("/principals/{principal_id}/roles", response_model=WriteResult)
def grant_role(
    principal_id: IdPath, body: RoleChange, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Grant a role (admin)."""
    return written(response, ledger.grant_role(principal_id, body.role.value, actor=caller.actor))


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
    principal_id: IdPath, body: SigningKeyCreate, caller: SelfOrAdmin, ledger: LedgerDep, response: Response
) -> object:
    """Register a public signing key (the principal itself, or an admin)."""
    key_id, result = ledger.register_signing_key(principal_id, body.public_key_pem, actor=caller.actor)
    return {**written(response, result), "key_id": key_id}


@router.post("/principals/{principal_id}/api-keys", response_model=ApiKeyIssued, status_code=status.HTTP_201_CREATED)
def issue_api_key(
    principal_id: IdPath, body: ApiKeyCreate, caller: AdminCaller, ledger: LedgerDep, response: Response
) -> object:
    """Issue an API key (admin); the key is returned once and stored only as a digest."""
    token = new_token()
    result = ledger.issue_api_key(principal_id, token, body.label, actor=caller.actor)
    response.headers["Cache-Control"] = "no-store"
    return {**written(response, result), "api_key": token}


@router.delete("/api-keys/{key_id}", response_model=WriteResult)
def revoke_api_key(key_id: IdPath, caller: AdminCaller, ledger: LedgerDep, response: Response) -> object:
    """Revoke an API key by its id (admin)."""
    return written(response, ledger.revoke_api_key(key_id, "revoked by an admin", actor=caller.actor))
