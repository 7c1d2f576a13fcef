"""The record's environment: which Python its code needs, what an interpreter has, what requirements.txt asks.

Checked before anything is launched, so a re-run (or a smoke test) fails with one clear line instead of a
SyntaxError or an ImportError inside torchrun on eight GPUs:

- `required_python(sources)`: the oldest Python that parses the record's code (decoded wrappers included).
  Python 3.12 (PEP 701) lets an f-string reuse its own quotes (`f"{d["k"]}"`), which 3.11 rejects; the
  auditor's parser (`audit.load.parse`) already repairs those to analyse them, and a repair is the evidence.
  On a 3.12+ interpreter the tokenizer shows the same thing directly.
- `probe(python)`: the interpreter's version, its torch (and whether it is a CUDA build), its packages.
- `requirements_problems(text, probe)`: what the record's `requirements.txt` pins that the interpreter lacks.
- `python_for(...)`: `--python PATH` / `--venv DIR` / the verifier's own interpreter, and, with
  `--install-requirements`, a per-record venv built from requirements.txt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import InputError
from audit.load.parse import repaired
from audit.load.resolve import ResolvedSource

PROBE_TIMEOUT_S = 180.0
INSTALL_TIMEOUT_S = 3600.0
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
STAMP = "pgolf-requirements.sha256"

_PROBE = r"""
import json, sys
out = {"version": list(sys.version_info[:3]), "executable": sys.executable, "packages": {}}
try:
    import importlib.metadata as md
    for d in md.distributions():
        name = (d.metadata["Name"] or "").strip()
        if name:
            out["packages"][name.lower().replace("_", "-")] = d.version
except Exception as e:
    out["packages_error"] = repr(e)
if "--torch" in sys.argv:
    try:
        import torch
        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
    except Exception as e:
        out["torch"] = None
        out["torch_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


# --- which Python the code needs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PythonNeed:
    version: tuple[int, int]
    where: str  # "train_gpt.py:574" (a decoded payload says so)
    why: str

    def describe(self) -> str:
        return f"Python {self.version[0]}.{self.version[1]}+ ({self.where}: {self.why})"


def _pep701_line(text: str) -> int | None:
    """First line of an f-string that only Python 3.12+ parses, or None."""
    if sys.version_info < (3, 12):
        fixed = repaired(text)
        if fixed == text:
            return None
        for i, (a, b) in enumerate(zip(text.split("\n"), fixed.split("\n")), 1):
            if a != b:
                return i
        return None
    # 3.12+: the tokenizer splits f-strings; a string inside the braces that opens with the f-string's own
    # quote is what older parsers reject
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    stack: list[str] = []
    for tok in toks:
        name = tokenize.tok_name.get(tok.type, "")
        if name == "FSTRING_START":
            quote = tok.string.lstrip("rRbBfFuU")
            if stack and quote[:1] == stack[-1][:1]:
                return tok.start[0]
            stack.append(quote)
        elif name == "FSTRING_END":
            if stack:
                stack.pop()
        elif tok.type == tokenize.STRING and stack:
            body = tok.string.lstrip("rRbBuU")
            if body[:1] == stack[-1][:1]:
                return tok.start[0]
    return None


def required_python(sources: tuple[ResolvedSource, ...] | list[ResolvedSource]) -> PythonNeed | None:
    """The newest Python feature the record's code uses, when it needs more than 3.11."""
    for src in sources:
        line = _pep701_line(src.text)
        if line is not None:
            what = f"{src.path}:{line}" if not src.chain else f"{src.path} (decoded {'/'.join(src.chain)}), line {line}"
            return PythonNeed((3, 12), what, "an f-string that reuses its own quotes (PEP 701)")
    return None


# --- what an interpreter has ----------------------------------------------------------------------------------
@dataclass
class Probe:
    python: str
    version: tuple[int, int, int] = (0, 0, 0)
    packages: dict[str, str] = field(default_factory=dict)
    torch: str | None = None
    torch_cuda: str | None = None
    error: str = ""

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def cuda_torch(self) -> bool:
        return bool(self.torch and self.torch_cuda)


_PROBES: dict[tuple[str, bool], Probe] = {}


def probe(python: str, *, torch: bool = True) -> Probe:
    """The interpreter's version and packages (and torch's CUDA build when `torch`); cached per process."""
    key = (python, torch)
    if key in _PROBES:
        return _PROBES[key]
    p = Probe(python)
    argv = [python, "-c", _PROBE] + (["--torch"] if torch else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        p.version = tuple(data["version"])  # type: ignore[assignment]
        p.packages = data.get("packages", {})
        p.torch, p.torch_cuda = data.get("torch"), data.get("torch_cuda")
        if torch and data.get("torch_error"):
            p.error = data["torch_error"]
    except (subprocess.SubprocessError, OSError, ValueError, IndexError, KeyError, TypeError) as e:
        p.error = f"cannot run {python}: {type(e).__name__}: {e}"
    _PROBES[key] = p
    return p


def version_problem(need: PythonNeed | None, p: Probe, what: str = "the nodes' Python") -> str:
    """One line when `p` is too old for the record's code, else ""."""
    if need is None or p.version == (0, 0, 0) or tuple(p.version[:2]) >= need.version:
        return ""
    return (
        f"the record needs {need.describe()}; {what} {p.python} is {p.version_text}: "
        f"pass --python or --venv with Python {need.version[0]}.{need.version[1]} or newer"
    )


def torch_warning(p: Probe) -> str:
    if p.error and not p.torch:
        return f"{p.python} has no usable torch ({p.error}); the seeds will crash at `import torch`"
    if not p.cuda_torch:
        return (
            f"{p.python} has a CPU-only torch ({p.torch}); the records train on CUDA "
            "(pass --python/--venv for the nodes' CUDA environment, or --install-requirements)"
        )
    return ""


# --- requirements.txt -----------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> list[tuple[str, object]]:
    """(line, Requirement) for every requirement line; pip options, includes and comments are skipped."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", "--")) or "://" in line:
            continue
        try:
            out.append((line, Requirement(line)))
        except InvalidRequirement:
            continue
    return out


def requirements_problems(text: str, p: Probe) -> list[str]:
    """What `p` lacks of requirements.txt: a missing package, a version outside the pin. A pin with a local
    label (`torch==2.9.1+cu128`) is met by the same release with another local label (a different CUDA wheel)."""
    from packaging.version import InvalidVersion, Version

    problems = []
    for line, req in parse_requirements(text):
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = p.packages.get(_norm(req.name))
        if have is None:
            problems.append(f"{req.name} is not installed (requirements.txt: {line})")
            continue
        if not req.specifier:
            continue
        try:
            v = Version(have)
        except InvalidVersion:
            continue
        if req.specifier.contains(v, prereleases=True):
            continue
        public = [s for s in req.specifier if s.operator == "==" and "+" in s.version]
        if public and all(Version(s.version).public == v.public for s in public):
            continue
        problems.append(f"{req.name} {have} does not satisfy {line}")
    return problems


def _torch_index(text: str) -> str | None:
    """The PyTorch wheel index a `+cuXYZ` pin needs (PyPI has no local versions)."""
    m = re.search(r"^\s*torch\s*==\s*[\w.]+\+(cu\d+|cpu|rocm[\d.]+)", text, re.M)
    return TORCH_INDEX.format(tag=m.group(1)) if m else None


def install_requirements(base_python: str, requirements: Path, venv: Path) -> str:
    """A per-record venv at `venv` with requirements.txt installed; reused while requirements.txt is the same.
    Returns its python. Failures are one line (InputError) naming the install log."""
    text = requirements.read_text(errors="replace")
    digest = hashlib.sha256(text.encode()).hexdigest()
    py = venv / "bin" / "python"
    stamp = venv / STAMP
    if py.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return str(py)
    log = venv.parent / "venv-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[base_python, "-m", "venv", "--clear", str(venv)]]
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements)]
    if index := _torch_index(text):
        pip += ["--extra-index-url", index]
    steps.append(pip)
    with open(log, "w") as fh:
        for argv in steps:
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()
            try:
                rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S).returncode
            except (subprocess.SubprocessError, OSError) as e:
                raise InputError(f"--install-requirements: {argv[0]} failed to run: {e} (log: {log})") from None
            if rc != 0:
                raise InputError(
                    f"--install-requirements: `{' '.join(argv[:4])} …` exited {rc}; see {log} "
                    "(packages outside PyPI, such as FlashAttention 3, must be installed by hand: pass --venv)"
                )
    stamp.write_text(digest + "\n")
    return str(py)


def python_for(python: str | None, venv: str | None) -> str:
    """The interpreter the seeds run under: --venv DIR's, --python PATH, or the verifier's own."""
    if python and venv:
        raise InputError("give --python or --venv, not both")
    if venv:
        d = Path(venv).expanduser()
        for cand in (d / "bin" / "python", d / "bin" / "python3", d / "Scripts" / "python.exe"):
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand.absolute())
        raise InputError(f"--venv {venv}: no bin/python in it (give the folder made by `python -m venv`)")
    if python:
        found = shutil.which(python) if os.sep not in python else python
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise InputError(f"--python {python}: not an executable file")
        return str(Path(found).absolute())
    return sys.executable
