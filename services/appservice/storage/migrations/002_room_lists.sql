-- Rooms an application service published in its own room directory, per network
-- ("<as id>|<network id>", the third_party_instance_id clients filter by).
CREATE TABLE as_room_list (
    network TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (network, room_id)
);
