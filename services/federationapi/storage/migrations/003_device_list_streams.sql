-- Per local user: the stream ID of the last m.device_list_update sent to other servers and
-- the device IDs it described (to tell them which devices were deleted since); also the
-- stream_id that /user/devices answers, so a remote's resync and our next EDU's prev_id agree.
CREATE TABLE device_list_streams (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    device_ids {{JSON}} NOT NULL
);
