"""The federationapi service: keys (ours, the remote-key cache and the notary), and —
when `federation.enabled` and given a database — the Server-Server API foundations:
/send, profile/directory queries, publicRooms, and the outbound queue fed from
`roomserver.output`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from fastapi import APIRouter, Depends, Request

from libs.config.model import FederationConfig
from libs.errors import MatrixError, forbidden
from libs.events.server_keys import OldVerifyKey
from libs.events.signing import SigningKey
from libs.log.api import EventLog, Producer
from libs.storage import Database
from services.roomserver.api import RoomserverAPI
from services.userapi.api import UserAPI

from .acl import ACL_EVENT_TYPE, server_acl_allows
from .api import InboundPDUSink, UnsupportedPDUSink
from .auth import FederationAuth
from .client import FederationClient, FederationError, FederationHTTPError
from .consumers import OutputConsumer
from .edus import EDUSender
from .keyring import DirectKeyFetcher, KeyFetcher, KeyRing, NotaryKeyFetcher, OwnKeys, parse_old_signing_keys
from .queue import OutboundQueue
from .perform import MembershipPerformer
from .routes import FederationRoutesContext, build_federation_router, build_key_router
from .routes_membership import MembershipRoutesContext, build_membership_router
from .storage.store import MIGRATIONS, FederationStore
from .transactions import MissingEventsClient, TransactionProcessor

# Responses say how long remote servers may cache our keys; re-signed on each request.
KEY_RESPONSE_VALIDITY_MS = 24 * 3600 * 1000

__all__ = ["FederationService", "FederationInternal", "MIGRATIONS", "KEY_RESPONSE_VALIDITY_MS"]


class FederationInternal:
    def __init__(self, server_name: str, signing_keys: Sequence[SigningKey], validity_ms: int,
                 old_keys: Sequence[OldVerifyKey] = ()) -> None:
        self.server_name = server_name
        self.signing_keys = list(signing_keys)
        self.validity_ms = validity_ms
        self.own = OwnKeys(server_name, self.signing_keys, list(old_keys), validity_ms)
        # Set by FederationService when federation is enabled (client, keyring, roomserver).
        self.performer: MembershipPerformer | None = None
        self.auth: FederationAuth | None = None
        self.missing_events: MissingEventsClient | None = None

    async def server_keys(self) -> dict[str, Any]:
        return self.own.response(int(time.time() * 1000))

    async def get_missing_events(self, origin: str, room_id: str, earliest: list[str], latest: list[str],
                                 limit: int, min_depth: int) -> list[dict[str, Any]]:
        if self.missing_events is None:
            return []
        return await self.missing_events.get_missing_events(origin, room_id, earliest, latest, limit, min_depth)

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        if self.missing_events is None:
            return []
        return await self.missing_events.get_event_auth(origin, room_id, event_id)

    async def get_event(self, origin: str, room_id: str, event_id: str) -> dict[str, Any] | None:
        if self.missing_events is None:
            return None
        return await self.missing_events.get_event(origin, room_id, event_id)

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        if self.missing_events is None:
            return [], []
        return await self.missing_events.get_state_ids(origin, room_id, event_id)

    async def backfill(self, origin: str, room_id: str, from_event_ids: list[str], limit: int
                       ) -> list[dict[str, Any]]:
        if self.missing_events is None:
            return []
        return await self.missing_events.backfill(origin, room_id, from_event_ids, limit)

    async def query_profile(self, user_id: str) -> dict[str, Any] | None:
        """A remote user's profile from their server's /query/profile (displayname and
        avatar_url when strings); None when that server knows no such user."""
        if self.performer is None:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        server = user_id.split(":", 1)[1] if user_id.startswith("@") and ":" in user_id else ""
        if not server:
            raise MatrixError(400, "M_INVALID_PARAM", "Not a user ID")
        try:
            resp = await self.performer.client.get_json(server, "/_matrix/federation/v1/query/profile",
                                                        {"user_id": user_id})
        except FederationHTTPError as e:
            if e.status == 404:
                return None
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered {e.status}") from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"cannot reach {server}: {e}") from None
        if not isinstance(resp, dict):
            raise MatrixError(502, "M_UNKNOWN", "bad profile answer")
        return {k: resp[k] for k in ("displayname", "avatar_url") if isinstance(resp.get(k), str)}

    async def query_public_rooms(self, server: str, params: dict[str, Any] | None,
                                 body: dict[str, Any] | None) -> dict[str, Any]:
        """`server`'s public room list: GET /publicRooms with `params`, or POST with `body`
        (a client's `/publicRooms?server=`). 502 when it cannot be had."""
        if self.performer is None:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        path = "/_matrix/federation/v1/publicRooms"
        try:
            resp = (await self.performer.client.post_json(server, path, body) if body is not None
                    else await self.performer.client.get_json(server, path, params or None))
        except FederationHTTPError as e:
            raise MatrixError(502 if e.status >= 500 else e.status, e.errcode or "M_UNKNOWN",
                              f"{server} answered {e.status}") from None
        except FederationError as e:
            raise MatrixError(502, "M_UNKNOWN", f"cannot reach {server}: {e}") from None
        if not isinstance(resp, dict) or not isinstance(resp.get("chunk"), list):
            raise MatrixError(502, "M_UNKNOWN", "bad public rooms answer")
        return resp

    async def query_remote_keys(self, server: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /_matrix/federation/v1/user/keys/{kind} ("query" or "claim") at `server`:
        its answer (502 MatrixError when it fails)."""
        if self.performer is None or kind not in ("query", "claim"):
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        try:
            resp = await self.performer.client.post_json(server, f"/_matrix/federation/v1/user/keys/{kind}", body)
        except FederationError as e:  # a typed error: over the cluster RPC a bare exception is a 500, retried
            raise MatrixError(502, "M_UNKNOWN", f"{server}: {e}"[:200]) from None
        return resp if isinstance(resp, dict) else {}

    async def verify_request(self, method: str, uri: str, authorization: list[str]) -> str:
        if self.auth is None:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        return await self.auth.verify(method, uri, authorization, None)

    def _perform(self) -> MembershipPerformer:
        if self.performer is None:
            raise MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")
        return self.performer

    async def perform_join(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        return await self._perform().perform_join(room_id, user_id, servers, content)

    async def perform_leave(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        return await self._perform().perform_leave(room_id, user_id, servers, content)

    async def perform_invite(self, room_id: str, sender: str, invitee: str, content: dict[str, Any]) -> str:
        return await self._perform().perform_invite(room_id, sender, invitee, content)

    async def perform_knock(self, room_id: str, user_id: str, servers: list[str], content: dict[str, Any]) -> str:
        return await self._perform().perform_knock(room_id, user_id, servers, content)

    async def query_room_alias(self, alias: str) -> tuple[str, list[str]]:
        return await self._perform().query_room_alias(alias)


@dataclass
class LogPublisher:
    """EDU records onto the log (the syncapi consumes them)."""
    producer: Producer

    async def publish(self, topic: str, key: str, record: dict[str, Any]) -> None:
        await self.producer.send(topic, key, json.dumps(record).encode())


class FederationService:
    name = "federationapi"

    def __init__(self, server_name: str, signing_keys: Sequence[SigningKey], version: str,
                 validity_ms: int = KEY_RESPONSE_VALIDITY_MS, *, config: FederationConfig | None = None,
                 db: Database | None = None, event_log: EventLog | None = None,
                 roomserver: RoomserverAPI | None = None, userapi: UserAPI | None = None,
                 sink: InboundPDUSink | None = None, client: FederationClient | None = None) -> None:
        cfg = config or FederationConfig()
        self.config = cfg
        old_keys = parse_old_signing_keys(cfg.old_signing_keys)
        self.api = FederationInternal(server_name, signing_keys, min(validity_ms, KEY_RESPONSE_VALIDITY_MS * 7),
                                      old_keys)
        router = APIRouter()

        @router.get("/_matrix/key/v2/server")
        async def server_keys() -> dict[str, Any]:
            return await self.api.server_keys()

        # Deprecated form with a key ID; the whole key set is returned either way.
        @router.get("/_matrix/key/v2/server/{key_id}")
        async def server_keys_by_id(key_id: str) -> dict[str, Any]:
            return await self.api.server_keys()

        @router.get("/_matrix/federation/v1/version")
        async def fed_version() -> dict[str, Any]:
            return {"server": {"name": "Axon", "version": version}}

        self.routers: list[APIRouter] = [router]
        self.readiness_checks: list[Callable[[], Awaitable[bool]]] = []
        self.client: FederationClient | None = None
        self.keyring: KeyRing | None = None
        self.queue: OutboundQueue | None = None
        self.output_consumer: OutputConsumer | None = None
        self.edu_sender: EDUSender | None = None
        self.transactions: TransactionProcessor | None = None
        self._owns_client = False
        if db is None:
            return  # keys and version only
        store = FederationStore(db)
        self.store = store
        if client is None:
            client = FederationClient(server_name, signing_keys[0], cfg)
            self._owns_client = True
        self.client = client
        fetchers: list[KeyFetcher] = [DirectKeyFetcher(client)]
        self.keyring = KeyRing(store, self.api.own, fetchers)
        for notary in cfg.trusted_key_servers:
            if notary != server_name:
                fetchers.append(NotaryKeyFetcher(client, notary, self.keyring))
        self.routers.append(build_key_router(self.keyring))
        self.readiness_checks.append(db.ping)
        if not cfg.enabled:
            return

        async def room_version_of(room_id: str) -> str | None:
            return await roomserver.get_room_version(room_id) if roomserver is not None else None

        async def acl_of(room_id: str) -> dict[str, Any] | None:
            if roomserver is None:
                return None
            ev = await roomserver.get_state_event(room_id, ACL_EVENT_TYPE, "")
            content = ev.get("content") if ev else None
            return content if isinstance(content, dict) else None

        publisher = LogPublisher(event_log.producer()) if event_log is not None else None
        self.transactions = TransactionProcessor(server_name, store, self.keyring, sink or UnsupportedPDUSink(),
                                                 room_version_of, publisher, acl_of=acl_of)
        self.api.missing_events = MissingEventsClient()
        self.api.missing_events.client, self.api.missing_events.transactions = client, self.transactions
        auth = FederationAuth(server_name, self.keyring)
        self.api.auth = auth
        self.routers.append(build_federation_router(FederationRoutesContext(
            server_name=server_name, auth=auth, keyring=self.keyring, transactions=self.transactions,
            roomserver=roomserver, userapi=userapi, store=store)))
        if roomserver is not None:
            from .routes_events import build_events_router

            self.routers.append(build_events_router(server_name, auth, roomserver))
        if roomserver is not None:
            async def membership_acl(request: Request, origin: str = Depends(auth)) -> None:
                # The room's server ACL applies to the handshakes too (make_*/send_*/invite);
                # `auth` is the endpoint's own dependency, so it runs once per request.
                room_id = request.path_params.get("room_id")
                if isinstance(room_id, str) and not server_acl_allows(await acl_of(room_id), origin):
                    raise forbidden(f"{origin} is denied by the room's server ACL")

            membership = APIRouter(dependencies=[Depends(membership_acl)])
            membership.include_router(build_membership_router(MembershipRoutesContext(
                server_name=server_name, auth=auth, keyring=self.keyring, roomserver=roomserver,
                signing_key=signing_keys[0], userapi=userapi)))
            self.routers.append(membership)
            self.api.performer = MembershipPerformer(server_name, signing_keys[0], client, self.keyring, roomserver)
        self.queue = OutboundQueue(server_name, store, client, cfg)
        if event_log is not None and roomserver is not None:
            performer = self.api.performer
            self.output_consumer = OutputConsumer(
                server_name, event_log, roomserver, self.queue,
                invite_notifier=performer.notify_invite if performer is not None else None)
            self.edu_sender = EDUSender(server_name, event_log, roomserver, userapi, self.queue)

    async def start(self) -> None:
        if self.queue is not None:
            await self.queue.start()
        if self.output_consumer is not None:
            await self.output_consumer.start()
        if self.edu_sender is not None:
            await self.edu_sender.start()

    async def stop(self) -> None:
        if self.edu_sender is not None:
            await self.edu_sender.stop()
        if self.output_consumer is not None:
            await self.output_consumer.stop()
        if self.queue is not None:
            await self.queue.stop()
        if self.client is not None and self._owns_client:
            await self.client.aclose()
