"""POST /register (user-interactive auth; kind=guest), GET /register/available."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from libs.errors import MatrixError, forbidden, invalid_username, user_in_use
from services.clientapi.routes.common import AccountRoutesContext, Body, client_ip, parse, ratelimit, read_body
from services.userapi.api import UIA_REGISTER
from services.userapi.identifiers import new_localpart
from services.userapi.passwords import MAX_PASSWORD_LENGTH
from services.userapi.uia import STAGE_DUMMY, STAGE_TOKEN

# Registration parameters a UIA session carries over to its later requests.
_REMEMBERED = {"username", "password", "device_id", "initial_device_display_name", "inhibit_login"}


class RegisterBody(Body):
    username: str | None = None
    password: str | None = None
    device_id: str | None = None
    initial_device_display_name: str | None = None
    inhibit_login: bool = False
    auth: dict[str, Any] | None = None


def router(ctx: AccountRoutesContext, prefix: str = "") -> APIRouter:
    r = APIRouter(prefix=prefix)
    reg = ctx.config.registration
    server_name = ctx.config.server_name

    def flows() -> list[list[str]]:
        if reg.require_token:
            return [[STAGE_TOKEN]]
        if reg.allow_dummy_flow:
            return [[STAGE_DUMMY]]
        return []

    async def check_username(username: str, for_appservice: bool = False) -> str:
        # Like Synapse: registration is case-insensitive, IDs are stored lowercase.
        localpart = username.lower()
        # '_' starts localparts reserved for application services.
        why = await ctx.userapi.localpart_error(
            localpart[1:] if for_appservice and localpart.startswith("_") else localpart)
        if why is not None:
            raise invalid_username(why)
        registry = ctx.auth.appservices
        if not for_appservice and registry is not None \
                and registry.exclusive_user_owner(f"@{localpart}:{server_name}") is not None:
            raise MatrixError(400, "M_EXCLUSIVE", "This user ID is reserved by an application service")
        if not await ctx.userapi.is_localpart_available(localpart):
            raise user_in_use()
        return localpart

    async def login_response(user_id: str, body: RegisterBody) -> dict[str, Any]:
        if body.inhibit_login:
            return {"user_id": user_id, "home_server": server_name}
        if body.device_id is not None and not (0 < len(body.device_id) <= 255):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid device_id")
        result = await ctx.userapi.create_device(user_id, body.device_id, body.initial_device_display_name)
        return {
            "user_id": user_id,
            "access_token": result.access_token,
            "device_id": result.device_id,
            "home_server": server_name,
        }

    @r.post("/register")
    async def register(request: Request, kind: str = "user") -> dict[str, Any]:
        if kind not in ("user", "guest"):
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        raw = await read_body(ctx, request, allow_empty=True)
        body = parse(RegisterBody, raw)
        auth_type = body.auth.get("type") if body.auth else None
        if raw.get("type") == "m.login.application_service" or auth_type == "m.login.application_service":
            return await register_appservice_user(request, body)
        if kind == "guest":
            if not reg.allow_guests:
                raise forbidden("Guest access is disabled")
            ratelimit(ctx, "register", client_ip(request))
            account = await ctx.userapi.create_account(new_localpart(), None, is_guest=True)
            return await login_response(account.user_id, body)

        available_flows = flows()
        if not reg.enabled or not available_flows:
            raise forbidden("Registration has been disabled")
        # The UIA session remembers the first request's parameters and, once done, the
        # registered user: a retry with the same session logs that user in again.
        session = body.auth.get("session") if body.auth else None
        stored = await ctx.userapi.get_uia_data(session) if isinstance(session, str) else None
        stored_hash: str | None = None
        if stored:
            done_user = stored.get("registered_user_id")
            params = {k: v for k, v in stored.items() if k in _REMEMBERED}
            params.update({k: v for k, v in raw.items() if k in _REMEMBERED})
            body = parse(RegisterBody, {**params, "auth": body.auth})
            if isinstance(done_user, str):
                if body.username is not None and done_user != f"@{body.username.lower()}:{server_name}":
                    raise MatrixError(400, "M_UNKNOWN", "This session already registered another user")
                return await login_response(done_user, body)
            if body.password is None and isinstance(stored.get("password_hash"), str):
                stored_hash = stored["password_hash"]
        if body.password is not None and len(body.password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long")
        localpart = await check_username(body.username) if body.username is not None else None
        try:
            await ctx.userapi.check_user_interactive_auth(UIA_REGISTER, available_flows, body.auth,
                                                          keep_session=True)
        except MatrixError as e:
            # A UIA 401 (UIARequired in-process; a MatrixError with the same body when the
            # userapi is reached over the internal RPC in the cluster).
            sid = (e.body or {}).get("session") if e.status == 401 else None
            if isinstance(sid, str) and not stored:
                data = body.model_dump(include=_REMEMBERED - {"password"}, exclude_none=True)
                if body.password is not None:  # only its hash is kept
                    data["password_hash"] = await ctx.userapi.hash_password(body.password)
                await ctx.userapi.set_uia_data(sid, data)
            raise

        if body.password is None and stored_hash is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing password")
        ratelimit(ctx, "register", client_ip(request))
        account = await ctx.userapi.create_account(localpart or new_localpart(), body.password,
                                                   password_hash=stored_hash)
        if isinstance(session, str):
            await ctx.userapi.set_uia_data(session, {"registered_user_id": account.user_id})
        return await login_response(account.user_id, body)

    async def register_appservice_user(request: Request, body: RegisterBody) -> dict[str, Any]:
        # Spec "Server admin style permissions": an AS registers users of its namespace
        # with its as_token, no password and no UIA.
        svc = ctx.auth.appservice_for(request)
        if svc is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Application service registration needs the as_token")
        if body.username is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
        localpart = body.username[1:].split(":", 1)[0] if body.username.startswith("@") else body.username
        localpart = await check_username(localpart, for_appservice=True)
        user_id = f"@{localpart}:{server_name}"
        if not svc.is_interested_in_user(user_id):
            raise MatrixError(400, "M_EXCLUSIVE", "This user ID is not in the application service's namespace")
        account = await ctx.userapi.create_account(localpart, None, appservice=True)
        return await login_response(account.user_id, body)

    @r.get("/register/available")
    async def available(username: str | None = None) -> dict[str, Any]:
        if username is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing username")
        await check_username(username)
        return {"available": True}

    return r
