"""Admin helpers for the `axon` CLI."""
from __future__ import annotations

from services.userapi.api import Account, UserAPI


async def create_user_cli(userapi: UserAPI, localpart: str, password: str, admin: bool) -> Account:
    """`axon create-user`: create an account (raises MatrixError M_USER_IN_USE /
    M_INVALID_USERNAME with a readable message). Accepts a localpart or a full user ID
    on this server."""
    if localpart.startswith("@"):
        localpart = localpart[1:].split(":", 1)[0]
    return await userapi.create_account(localpart, password, is_guest=False, is_admin=admin)
