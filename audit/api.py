"""Programmatic entry points used by the verifier, the trainer's packager and tests."""

from __future__ import annotations

from .engine import AuditReport, audit_submission
from .load.folder import load_folder
from .load.git import load_git_folder


def audit_folder(path: str, **kw) -> AuditReport:
    """Audit a record folder on disk."""
    return audit_submission(load_folder(path), **kw)


def audit_git(git_dir: str, ref: str, folder: str, **kw) -> AuditReport:
    """Audit a record folder straight from git objects (no checkout)."""
    return audit_submission(load_git_folder(git_dir, ref, folder), **kw)
