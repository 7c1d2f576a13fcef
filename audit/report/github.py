"""GitHub Actions workflow commands: one `::error`/`::warning`/`::notice` line per finding, shown as annotations
on the PR's files. Messages and properties are escaped as the runner requires, so a submission's text cannot
end the command early or start a new one."""

from __future__ import annotations

from .sarif import repo_uri

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(reports: list[dict], include_info: bool = False) -> str:
    """One line per finding, then one `::notice` per folder with its verdict."""
    lines = []
    for rep in reports:
        folder = rep.get("folder") or ""
        for f in rep.get("findings", ()):
            if f["severity"] == "info" and not include_info:
                continue
            loc = f["location"]
            props = [f"file={_prop(repo_uri(loc.get('path') or '.', folder))}"]
            if loc.get("start_line"):
                props.append(f"line={loc['start_line']}")
                if loc.get("end_line", 0) > loc["start_line"]:
                    props.append(f"endLine={loc['end_line']}")
            props.append(f"title={_prop(f['rule'] + (' ' + f['category'] if f.get('category') else ''))}")
            lines.append(f"::{COMMAND[f['severity']]} {','.join(props)}::{_data(f['message'])}")
        where = folder or f"PR {rep.get('pr')}"
        lines.append(f"::notice title={_prop('pgolf-audit ' + where)}::{_data(rep['verdict'] + ': ' + rep['reason'])}")
    return "".join(line + "\n" for line in lines)
