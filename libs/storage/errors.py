"""Storage errors, the same classes whichever adapter raised them.

The HTTP edge maps ``DatabaseUnavailable`` to 503 ``M_UNKNOWN`` (see libs/http);
``UniqueViolation`` is what services catch to implement "already exists".
"""
from __future__ import annotations


class DatabaseError(Exception):
    """Any database failure not covered by a more specific class (a bug: 500)."""


class IntegrityError(DatabaseError):
    """A constraint (NOT NULL, CHECK, FOREIGN KEY, UNIQUE) was violated."""


class UniqueViolation(IntegrityError):
    """A UNIQUE or PRIMARY KEY constraint was violated."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, is shutting down, or stayed locked too long.

    Transient: the request may be retried later (HTTP 503)."""


class MigrationError(DatabaseError):
    """Migration files are malformed (duplicate/invalid version) or one failed."""
