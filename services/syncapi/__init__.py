"""The syncapi: /sync, /messages, /context, /members, /joined_members.

Layout:
- api.py        record contracts of the topics it consumes, StreamToken, the SyncAPI protocol
- consumers.py  SyncProjector (idempotent projection) and SyncConsumers (KeyedRunner per topic)
- storage/      SyncStore (all SQL, once for both dialects) and migrations
- streams.py    in-memory positions, the long-poll Notifier, typing state, token parsing
- sync.py       the /sync builder and long-poll
- history.py    /messages, /context, /members, /joined_members
- views.py      client formatting (redactions, transaction IDs), history visibility, state rewinding
- broadcast.py  cross-replica position announcements (PostgreSQL LISTEN/NOTIFY)
- routes.py     FastAPI routers (v3 and r0)
- service.py    SyncService wiring

Streams and tokens: each stream (events, typing, receipts, to_device, account_data,
device_lists) has its own increasing position allocated in the syncapi's database
(`stream_ids`), never a log offset. Tokens look like ``s<events>_<typing>_<receipts>_
<to_device>_<account_data>_<device_lists>``; /messages accepts any of them and uses
the events position (a token at P sits between P and P+1).

State: `current_state` per room plus `state_deltas` (each change with the previous
event ID), so the state at any position is current state rewound through the deltas
after it. State that arrives with an event but is not the event's own (a join's
fetched state, a state-resolution outcome) gets its own position just before the
event, so it counts as the state the timeline starts from.
"""
