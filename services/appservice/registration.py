"""Application-service registrations: the YAML files named by `app_service_config_files`.

    registry = load_registry(config.app_service_config_files, config.server_name)
    registry.by_token(as_token) -> AppService | None
    registry.exclusive_user_owner(user_id) / exclusive_alias_owner(alias) -> AppService | None

A registration (spec "Application Service API", Registration): `id`, `url` (null: no
pushes), `as_token`, `hs_token`, `sender_localpart`, `namespaces.{users,aliases,rooms}`
as lists of `{regex, exclusive}`, optional `rate_limited`, `protocols`. Regexes match
the whole ID (Python `re.fullmatch`). Bad files are a `RegistrationError` at start.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml


class RegistrationError(ValueError):
    """An application-service registration file that cannot be used."""


@dataclass(frozen=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


@dataclass
class AppService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # full user ID of sender_localpart
    users: list[Namespace] = field(default_factory=list)
    aliases: list[Namespace] = field(default_factory=list)
    rooms: list[Namespace] = field(default_factory=list)
    rate_limited: bool = True
    protocols: list[str] = field(default_factory=list)

    def is_interested_in_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(n.matches(user_id) for n in self.users)

    def is_interested_in_alias(self, alias: str) -> bool:
        return any(n.matches(alias) for n in self.aliases)

    def is_interested_in_room(self, room_id: str) -> bool:
        return any(n.matches(room_id) for n in self.rooms)

    def is_interested_in_event(self, event: dict[str, Any], room_aliases: Iterable[str] = ()) -> bool:
        """Spec: events whose sender or (member) state_key is in the users namespace, in a
        room of the rooms namespace, or in a room with an alias of the aliases namespace."""
        sender = event.get("sender")
        if isinstance(sender, str) and self.is_interested_in_user(sender):
            return True
        if event.get("type") == "m.room.member" and isinstance(event.get("state_key"), str) \
                and self.is_interested_in_user(event["state_key"]):
            return True
        room_id = event.get("room_id")
        if isinstance(room_id, str) and self.is_interested_in_room(room_id):
            return True
        return any(self.is_interested_in_alias(a) for a in room_aliases)


def _namespaces(raw: Any, where: str) -> list[Namespace]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RegistrationError(f"{where} must be a list")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("regex"), str):
            raise RegistrationError(f"{where}[{i}] needs a string 'regex'")
        exclusive = item.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{where}[{i}].exclusive must be a boolean")
        try:
            out.append(Namespace(re.compile(item["regex"]), exclusive))
        except re.error as e:
            raise RegistrationError(f"{where}[{i}]: bad regex: {e}") from None
    return out


def parse_registration(doc: Any, server_name: str, source: str = "registration") -> AppService:
    if not isinstance(doc, dict):
        raise RegistrationError(f"{source}: not a mapping")
    for key in ("id", "as_token", "hs_token", "sender_localpart"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise RegistrationError(f"{source}: '{key}' must be a non-empty string")
    url = doc.get("url")
    if url is not None and not isinstance(url, str):
        raise RegistrationError(f"{source}: 'url' must be a string or null")
    ns = doc.get("namespaces") or {}
    if not isinstance(ns, dict):
        raise RegistrationError(f"{source}: 'namespaces' must be a mapping")
    protocols = doc.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError(f"{source}: 'protocols' must be a list of strings")
    rate_limited = doc.get("rate_limited", True)
    return AppService(
        id=doc["id"], url=url or None, as_token=doc["as_token"], hs_token=doc["hs_token"],
        sender=f"@{doc['sender_localpart']}:{server_name}",
        users=_namespaces(ns.get("users"), f"{source}: namespaces.users"),
        aliases=_namespaces(ns.get("aliases"), f"{source}: namespaces.aliases"),
        rooms=_namespaces(ns.get("rooms"), f"{source}: namespaces.rooms"),
        rate_limited=bool(rate_limited), protocols=list(protocols),
    )


class AppServiceRegistry:
    def __init__(self, services: Sequence[AppService] = ()) -> None:
        self.services = list(services)
        ids = [s.id for s in self.services]
        tokens = [s.as_token for s in self.services]
        if len(set(ids)) != len(ids) or len(set(tokens)) != len(tokens):
            raise RegistrationError("application services need unique ids and as_tokens")
        self._by_token = {s.as_token: s for s in self.services}

    def by_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    def by_id(self, as_id: str) -> AppService | None:
        return next((s for s in self.services if s.id == as_id), None)

    def exclusive_user_owner(self, user_id: str) -> AppService | None:
        return next((s for s in self.services if any(n.exclusive and n.matches(user_id) for n in s.users)), None)

    def exclusive_alias_owner(self, alias: str) -> AppService | None:
        return next((s for s in self.services if any(n.exclusive and n.matches(alias) for n in s.aliases)), None)

    def alias_services(self, alias: str) -> list[AppService]:
        return [s for s in self.services if s.is_interested_in_alias(alias)]

    def user_services(self, user_id: str) -> list[AppService]:
        return [s for s in self.services if any(n.matches(user_id) for n in s.users)]


def load_registry(paths: Sequence[str], server_name: str) -> AppServiceRegistry:
    services = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise RegistrationError(f"{path}: {e}") from None
        services.append(parse_registration(doc, server_name, path))
    return AppServiceRegistry(services)
