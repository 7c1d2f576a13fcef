from __future__ import annotations

from ..analysis.network import eval_phase, has_training
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

RULING = "challenge README on main: no network access during evaluation; issue #1017 (a self-contained artifact)"


class NetworkAtEval(Rule):
    """
    ## What it does
    Finds calls that reach the network — `requests`, `urllib.request.urlopen`, `http.client`, `socket`,
    `huggingface_hub` (`hf_hub_download`, `snapshot_download`), `datasets.load_dataset`, `torch.hub`, and
    `wget`/`curl`/`pip install` run through `subprocess`/`os.system` — resolving import aliases, and decides
    when they run: inside an evaluation/scoring function (or a helper it calls), or after the training loop,
    is the evaluation path; module import and set-up before training is start-up.

    ## Why it breaks the rules
    The artifact must be self-contained: evaluation may not fetch anything (challenge README). A download
    during scoring can bring in data or weights that are not counted in the 16 MB.

    ## Example
    ```python
    def eval_val(model, val_tokens):
        stats = requests.get("https://example.org/unigram.json").json()
        ...
    ```

    ## Compliant alternative
    Ship everything inside the artifact. Data and tokenizer downloads belong in the documented preparation
    step (`data/cached_challenge_fineweb.py`), not in the scored run.

    ## Known false positives
    Start-up downloads before training (fetching the tokenizer or the data shards) are reported as
    `warning` for a human to judge, `pip install` at start-up as `info`, and data-preparation scripts with no
    training loop as `info`. Strings in error messages ("pip install …") are not calls and are ignored.
    """

    CODE = "PG108"
    NAME = "network-at-eval"
    CATEGORY = "other"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "network access (downloads, HTTP, sockets) on the evaluation path"
    FIX_HINT = "Remove network calls from the scored run; ship what evaluation needs inside the artifact."

    VALID = [
        Valid(
            """
            import subprocess, sys
            try:
                import brotli
            except ImportError:
                raise SystemExit("brotli missing: pip install brotli")
            def eval_val(model, val_tokens):
                return model(val_tokens)
            print(eval_val(None, None))
            """,
            note="a pip hint inside an error message is a string, not a call",
        ),
        Valid(
            """
            import os
            from huggingface_hub import hf_hub_download
            def fetch(name):
                hf_hub_download(repo_id="some/dataset", filename=name, local_dir="./data")
            for i in range(int(os.environ.get("N_SHARDS", "10"))):
                fetch(f"fineweb_train_{i:06d}.bin")
            """,
            note="a data preparation script (no training, no evaluation): info",
        ),
        Valid(
            """
            import os, requests
            REMOTE = int(os.environ.get("REMOTE_EVAL", "0"))
            def eval_val(model, val_tokens):
                if REMOTE:
                    requests.post("http://localhost:8000/score", json={})
                return model(val_tokens)
            def main(model, opt, loader, val_tokens):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
                print(eval_val(model, val_tokens))
            main(None, None, None, None)
            """,
            note="network in the eval function but disabled by default: info",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import urllib.request as ur
            def eval_val(model, val_tokens):
                prior = ur.urlopen("https://example.org/prior.bin").read()
                return model(val_tokens, prior)
            def main(model, val_tokens):
                print(eval_val(model, val_tokens))
            main(None, None)
            """,
            note="a download inside the evaluation function",
            line=4,
            message="inside the evaluation function `eval_val()`",
        ),
        Invalid(
            """
            import subprocess
            def load_cache():
                subprocess.run(["wget", "-q", "https://example.org/ngram.bin"])
                return open("ngram.bin", "rb").read()
            def main(model, opt, loader, val_tokens):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
                cache = load_cache()
                print(model(val_tokens, cache))
            main(None, None, None, None)
            """,
            note="a helper called after the training loop fetches data with wget",
            line=4,
            message="it runs after the training loop",
        ),
        Invalid(
            """
            from huggingface_hub import snapshot_download
            def setup_data():
                snapshot_download(repo_id="someone/custom_tokenized", repo_type="dataset", local_dir="./data")
            setup_data()
            def main(model, opt, loader):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
            main(None, None, None)
            """,
            severity=Severity.WARNING,
            note="a start-up data download before training: needs a human",
            line=4,
            message="Download at start-up before training",
        ),
    ]

    def check(self):
        calls = self.analyses.network_calls
        if not calls:
            return
        training = has_training(self.program)
        for nc in calls:
            ev = [self.location(nc.idx, nc.call, f"network call: {nc.what}")]
            if nc.bound_at is not None:
                ev.append(self.location(nc.idx, nc.bound_at, "import that binds the name"))
            phase = eval_phase(self.program, nc.idx, nc.call)
            if phase is not None:
                where, widx, why = phase
                ev.append(self.location(widx, where, why))
                yield self.finding(
                    nc.idx,
                    nc.call,
                    f"Network access on the evaluation path ({nc.what}): it {why}",
                    evidence=ev,
                    confidence=Confidence.HIGH if nc.kind == "download" else Confidence.MEDIUM,
                )
            elif nc.kind == "download" and training:
                yield self.finding(
                    nc.idx,
                    nc.call,
                    f"Download at start-up before training ({nc.what}): data or tokenizer fetched by the scored run "
                    "itself, not by the documented preparation step",
                    evidence=ev,
                    severity=Severity.WARNING,
                    confidence=Confidence.MEDIUM,
                )
            else:
                what = "package install" if nc.kind == "pip" else "download in a script with no training loop"
                yield self.finding(
                    nc.idx,
                    nc.call,
                    f"Network use at set-up ({what}: {nc.what}); not on the evaluation path",
                    evidence=ev,
                    severity=Severity.INFO,
                    confidence=Confidence.MEDIUM,
                    category=None,
                )
