"""SyTest client-server regressions, round 2: each test names the SyTest case it mirrors."""
from __future__ import annotations

import time
from urllib.parse import quote

from tests.integration.conftest import MatrixTestClient


async def test_push_rule_paths_and_room_rule_ids(matrix: MatrixTestClient) -> None:
    # 61push/02add_rules.pl "Can add global push rule for room" (alias-looking room rule IDs)
    # and 61push/80torture.pl: malformed paths are 400s, not 404/405/307.
    alice = await matrix.register()
    rid = quote("#spam:example.com", safe="")
    await matrix.request(alice, "PUT", f"/pushrules/global/room/{rid}", json={"actions": ["notify"]})
    got = await matrix.request(alice, "GET", f"/pushrules/global/room/{rid}")
    assert got["rule_id"] == "#spam:example.com" and got["default"] is False
    for path in ("/pushrules/", "/pushrules/global", "/pushrules/global/room", "/pushrules/global/room/",
                 "/pushrules/global/override/.m.rule.master/not_an_attr"):
        await matrix.request(alice, "PUT", path, expect=400, json={"enabled": True})
    for path in ("/pushrules/global", "/pushrules/global/room", "/pushrules/global/override/.m.rule.master/not_an_attr"):
        await matrix.request(alice, "GET", path, expect=400)
    await matrix.request(alice, "GET", "/pushrules/global/override/not_a_rule_id", expect=404)
    assert "override" in await matrix.request(alice, "GET", "/pushrules/global/")


async def test_toggling_every_default_push_rule_is_quick(matrix: MatrixTestClient) -> None:
    # 61push/07_set_enabled.pl "Can enable/disable default rules": ~20 rules x 6 requests in 10 s.
    alice = await matrix.register()
    rules = (await matrix.request(alice, "GET", "/pushrules/"))["global"]
    start = time.monotonic()
    for kind, lst in rules.items():
        for rule in lst:
            path = f"/pushrules/global/{kind}/{quote(rule['rule_id'], safe='')}/enabled"
            for enabled in (True, False):
                await matrix.request(alice, "PUT", path, json={"enabled": enabled})
                assert await matrix.request(alice, "GET", path) == {"enabled": enabled}
    assert time.monotonic() - start < 8
