"""pgolf auditor: static review of Parameter Golf record folders and PRs."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/pgolf/pgolf"  # the docs that SARIF and the review comment link to
