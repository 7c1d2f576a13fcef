"""pgolf auditor: static review of Parameter Golf record folders and PRs."""

__version__ = "0.1.0"
