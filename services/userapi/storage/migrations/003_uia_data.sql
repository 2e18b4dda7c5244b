-- What a UIA session remembers for its operation (e.g. registration parameters and result).
ALTER TABLE uia_sessions ADD COLUMN data {{JSON}};
