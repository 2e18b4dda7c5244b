"""User-interactive authentication (Client-Server spec, "User-Interactive
Authentication API"): sessions stored in the userapi database so any replica can
continue them; stages m.login.dummy, m.login.password, m.login.registration_token."""
from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from libs.config.model import RegistrationConfig
from services.userapi.identifiers import local_localpart
from libs.errors import MatrixError
from services.userapi.storage.store import UserStore

SESSION_LIFETIME_MS = 30 * 60 * 1000

STAGE_DUMMY = "m.login.dummy"
STAGE_PASSWORD = "m.login.password"
STAGE_TOKEN = "m.login.registration_token"
WRONG_USER = "Password authentication must be for the logged-in user"


class UIARequired(MatrixError):
    """401 whose body is the spec's AuthenticationResponse (errcode only when a stage failed)."""

    def __init__(
        self, flows: list[list[str]], session: str, completed: list[str], params: dict[str, Any],
        errcode: str | None = None, error: str | None = None,
    ) -> None:
        super().__init__(401, errcode or "M_UNAUTHORIZED", error or "Additional authentication required")
        body: dict[str, Any] = {
            "flows": [{"stages": f} for f in flows],
            "params": params,
            "session": session,
            "completed": completed,
        }
        if errcode:
            body["errcode"] = errcode
            body["error"] = error or errcode
        self.body = body


PasswordChecker = Callable[[str, str], Awaitable[bool]]


class UserInteractiveAuth:
    def __init__(
        self, store: UserStore, registration: RegistrationConfig, server_name: str,
        check_password: PasswordChecker,
    ) -> None:
        self._store = store
        self._registration = registration
        self._server_name = server_name
        self._check_password = check_password

    async def check(
        self, purpose: str, flows: list[list[str]], auth: dict[str, Any] | None,
        user_id: str | None = None, params: dict[str, Any] | None = None, keep_session: bool = False,
    ) -> None:
        """Return once `auth` completes one of `flows`; raise UIARequired (401) otherwise.
        `keep_session`: a completed session stays (until it expires) so that the operation
        can be retried idempotently with it (registration)."""
        params = params or {}
        now = int(time.time() * 1000)
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        session_id = auth.get("session") if auth else None
        if session_id is not None and not isinstance(session_id, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.session must be a string")
        completed: list[str] = []
        if session_id:
            row = await self._store.get_uia_session(session_id)
            if row is None or now - row.created_ts > SESSION_LIFETIME_MS:
                raise MatrixError(400, "M_UNKNOWN", "Unknown or expired session ID")
            if row.purpose != purpose or row.user_id != user_id:
                raise MatrixError(403, "M_FORBIDDEN", "Session was started for another request")
            completed = list(row.completed)
        else:
            session_id = secrets.token_urlsafe(18)
            await self._store.create_uia_session(session_id, purpose, user_id, now)
            if now % 50 == 0:  # occasional cleanup of abandoned sessions
                await self._store.delete_uia_sessions_before(now - SESSION_LIFETIME_MS)

        stage = auth.get("type") if auth else None
        if stage is not None:
            allowed = {s for f in flows for s in f}
            if not isinstance(stage, str) or stage not in allowed:
                raise UIARequired(flows, session_id, completed, params, "M_UNRECOGNIZED",
                                  "Unrecognised or not offered authentication type")
            failure = await self._run_stage(stage, auth or {}, user_id)
            if failure == WRONG_USER:
                # Not a failed attempt but another account's credentials: refuse outright.
                raise MatrixError(403, "M_FORBIDDEN", failure)
            if failure is not None:
                raise UIARequired(flows, session_id, completed, params, "M_FORBIDDEN", failure)
            if stage not in completed:
                completed.append(stage)
                await self._store.set_uia_completed(session_id, completed)

        if any(all(s in completed for s in f) for f in flows):
            if not keep_session:
                await self._store.delete_uia_session(session_id)
            return
        raise UIARequired(flows, session_id, completed, params)

    async def _run_stage(self, stage: str, auth: dict[str, Any], user_id: str | None) -> str | None:
        """None if the stage passes, else why not."""
        if stage == STAGE_DUMMY:
            return None
        if stage == STAGE_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str) or not any(
                hmac.compare_digest(token.encode(), t.encode()) for t in self._registration.registration_tokens
            ):
                return "Invalid registration token"
            return None
        if stage == STAGE_PASSWORD:
            if user_id is None:
                return "Password authentication needs a logged-in user"
            who = auth.get("user")
            ident = auth.get("identifier")
            if isinstance(ident, dict):
                if ident.get("type") != "m.id.user":
                    return "Unsupported identifier type"
                who = ident.get("user")
            password = auth.get("password")
            if not isinstance(password, str):
                return "Missing password"
            if who is not None:
                if not isinstance(who, str):
                    return "Invalid user"
                localpart = local_localpart(who, self._server_name)
                if localpart is None or f"@{localpart}:{self._server_name}" != user_id:
                    return WRONG_USER
            if not await self._check_password(user_id, password):
                return "Invalid password"
            return None
        return "Unsupported authentication type"
