"""The triage page: one static HTML file for a queue of PRs, sortable and filterable in the browser, no server.

Every value from a submission (folder names, messages, categories) travels as JSON inside a
`<script type="application/json">` block with `<`, `>` and `&` escaped, and the page puts it on screen with
`textContent` only — a folder named `<img onerror=…>` is shown as text, never run. Links are built here from the
maintainer's `--repo-url` and the PR number or commit, and only http(s) URLs are linked.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from .. import __version__

_RANK = {"error": 0, "warning": 1, "info": 2}


def _http(url: str | None) -> str | None:
    return url.rstrip("/") if url and url.startswith(("https://", "http://")) else None


def _top_finding(row: dict) -> dict | None:
    findings = [f for f in row.get("findings", ()) if not f.get("legal_mechanism")] or list(row.get("findings", ()))
    return min(findings, key=lambda f: _RANK.get(f.get("severity"), 3)) if findings else None


def _entry(row: dict, repo: str | None) -> dict:
    claims = row.get("claims") or {}
    top = _top_finding(row)
    pr, sha, folder = row.get("pr"), row.get("head_sha"), (row.get("folder") or "").strip("/")
    finding_url = None
    if top and repo and sha and folder:
        loc = top.get("location") or {}
        if loc.get("start_line") and loc.get("path") and "(decoded)" not in loc["path"]:
            finding_url = f"{repo}/blob/{quote(sha)}/{quote(folder)}/{quote(loc['path'])}#L{loc['start_line']}"
    where = ""
    if top:
        loc = top.get("location") or {}
        where = f"{loc.get('path', '')}:{loc['start_line']}" if loc.get("start_line") else loc.get("path", "")
    return {
        "pr": pr if isinstance(pr, int) else None,
        "folder": folder,
        "verdict": row.get("verdict", "error"),
        "categories": list(row.get("categories", ())),
        "bpb": claims.get("claimed_bpb"),
        "seeds": len(claims.get("seeds") or ()) if claims else None,
        "artifact": claims.get("artifact_bytes"),
        "finding": f"{top['rule']}: {top['message']}" if top else row.get("reason", ""),
        "where": where,
        "pr_url": f"{repo}/pull/{pr}" if repo and isinstance(pr, int) else None,
        "finding_url": finding_url,
    }


def _script_json(data) -> str:
    return (
        json.dumps(data)
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def triage_html(rows: list[dict], repo_url: str | None = None, title: str = "pgolf-audit triage") -> str:
    repo = _http(repo_url)
    data = [_entry(r, repo) for r in rows]
    return (
        _PAGE.replace("__TITLE__", _text(title))
        .replace("__VERSION__", _text(__version__))
        .replace("__DATA__", _script_json(data))
    )


def _text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1f2328; }
  h1 { font-size: 1.3em; margin: 0 0 .5em; }
  .controls { display: flex; gap: 1em; align-items: center; margin-bottom: .8em; flex-wrap: wrap; }
  input[type=search] { width: 22em; padding: .3em; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #d0d7de; padding: .35em .5em; text-align: left; vertical-align: top; }
  th { cursor: pointer; user-select: none; background: #f6f8fa; position: sticky; top: 0; }
  th[aria-sort=ascending]::after { content: " \\25B2"; }
  th[aria-sort=descending]::after { content: " \\25BC"; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .v-flag { color: #cf222e; font-weight: 600; }
  .v-needs-human { color: #9a6700; font-weight: 600; }
  .v-clean, .v-legal_ttt { color: #1a7f37; font-weight: 600; }
  .v-error, .v-no-record { color: #57606a; }
  td:nth-child(2) { white-space: nowrap; }
  .finding { max-width: 48em; }
  .where { color: #57606a; font-family: ui-monospace, monospace; font-size: .9em; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div class="controls">
  <input id="filter" type="search" placeholder="filter: PR, folder, category, finding…" aria-label="filter">
  <label>verdict <select id="verdict"><option value="">all</option></select></label>
  <label>category <select id="category"><option value="">all</option></select></label>
  <span id="count"></span>
</div>
<table id="triage">
  <thead><tr>
    <th data-key="pr" data-type="num">PR</th>
    <th data-key="verdict">verdict</th>
    <th data-key="categories">categories</th>
    <th data-key="bpb" data-type="num">claimed bpb</th>
    <th data-key="seeds" data-type="num">seeds</th>
    <th data-key="artifact" data-type="num">artifact bytes</th>
    <th data-key="folder">folder</th>
    <th data-key="finding">top finding</th>
  </tr></thead>
  <tbody></tbody>
</table>
<p class="where">pgolf-audit __VERSION__ — static page; sort by clicking a column, filter above.</p>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const rows = JSON.parse(document.getElementById("data").textContent);
const tbody = document.querySelector("#triage tbody");
const filter = document.getElementById("filter");
const verdictSel = document.getElementById("verdict");
const categorySel = document.getElementById("category");
let sortKey = "pr", sortDir = 1, sortNum = true;

function option(select, value) {
  const o = document.createElement("option");
  o.value = value; o.textContent = value; select.appendChild(o);
}
[...new Set(rows.map(r => r.verdict))].sort().forEach(v => option(verdictSel, v));
[...new Set(rows.flatMap(r => r.categories))].sort().forEach(c => option(categorySel, c));

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "" : String(text);
  tr.appendChild(td);
  return td;
}
function link(td, text, url) {
  td.textContent = "";
  if (!url) { td.textContent = text; return; }
  const a = document.createElement("a");
  a.href = url; a.textContent = text; a.rel = "noopener noreferrer";
  td.appendChild(a);
}
function value(r, key) { return key === "categories" ? r.categories.join(", ") : r[key]; }
function compare(a, b) {
  const x = value(a, sortKey), y = value(b, sortKey);
  if (x == null && y == null) return 0;
  if (x == null) return 1;
  if (y == null) return -1;
  if (sortNum) return (x - y) * sortDir;
  return String(x).localeCompare(String(y)) * sortDir;
}
function shown(r) {
  if (verdictSel.value && r.verdict !== verdictSel.value) return false;
  if (categorySel.value && !r.categories.includes(categorySel.value)) return false;
  const q = filter.value.trim().toLowerCase();
  if (!q) return true;
  const hay = [r.pr, r.folder, r.verdict, r.categories.join(" "), r.finding, r.where].join(" ").toLowerCase();
  return hay.includes(q);
}
function render() {
  const list = rows.filter(shown).sort(compare);
  tbody.textContent = "";
  for (const r of list) {
    const tr = document.createElement("tr");
    tr.dataset.pr = r.pr == null ? "" : String(r.pr);
    link(cell(tr, ""), r.pr == null ? "" : "#" + r.pr, r.pr_url);
    cell(tr, r.verdict, "v-" + r.verdict);
    cell(tr, r.categories.join(", "));
    cell(tr, r.bpb == null ? "" : Number(r.bpb).toFixed(4), "num");
    cell(tr, r.seeds, "num");
    cell(tr, r.artifact == null ? "" : Number(r.artifact).toLocaleString("en-US"), "num");
    cell(tr, r.folder);
    const td = cell(tr, "", "finding");
    link(td, r.finding, r.finding_url);
    if (r.where) { const w = document.createElement("div"); w.className = "where"; w.textContent = r.where; td.appendChild(w); }
    tbody.appendChild(tr);
  }
  document.getElementById("count").textContent = list.length + " of " + rows.length + " shown";
  document.querySelectorAll("#triage th").forEach(th => {
    th.setAttribute("aria-sort", th.dataset.key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none");
  });
}
document.querySelectorAll("#triage th").forEach(th => th.addEventListener("click", () => {
  if (sortKey === th.dataset.key) sortDir = -sortDir;
  else { sortKey = th.dataset.key; sortDir = 1; sortNum = th.dataset.type === "num"; }
  render();
}));
[filter, verdictSel, categorySel].forEach(el => el.addEventListener("input", render));
render();
</script>
</body>
</html>
"""
