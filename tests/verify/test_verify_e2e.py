"""End to end with the reference trainer: its tiny CPU config on synthetic data, 3 seeds, each a 2-process
gloo torchrun, first through the `local` backend, then through submitit's local executor against the
claims the first pass produced — which must reproduce within the tolerance."""

from __future__ import annotations

import json
import shutil

import pytest

from verify import cli as verify_cli

pytest.importorskip("torch")
pytest.importorskip("sentencepiece")
pytest.importorskip("submitit")

from tests.support import ROOT

TRAINER = ROOT / "reference_trainer" / "train_gpt.py"


def _verify_once(capsys, *args) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(a) for a in args] + ["--format", "json", "-q", "--no-audit"])
    return exc.value.code, json.loads(capsys.readouterr().out)


def _verify(capsys, *args) -> tuple[int, dict]:
    return _verify_once(capsys, *args)


@pytest.mark.slow
def test_reference_trainer_three_seeds_local_then_submitit(tmp_path, capsys, monkeypatch):
    if not TRAINER.exists():
        pytest.skip("reference trainer not present")
    from reference_trainer.synthetic import TINY_TRAIN_ENV, export_synthetic_dataset

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ds = export_synthetic_dataset(tmp_path / "data")
    folder = tmp_path / "records" / "2026-01-01_Tiny"
    folder.mkdir(parents=True)
    shutil.copy(TRAINER, folder / "train_gpt.py")
    env = " ".join(f"{k}={v}" for k, v in {**TINY_TRAIN_ENV, "VOCAB_SIZE": ds.vocab_size}.items())
    (folder / "README.md").write_text(
        f"# Tiny\n\n```bash\n{env} torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    )
    common = [
        folder,
        "--seeds",
        "3",
        "--nproc",
        "2",
        "--data-path",
        ds.data_path,
        "--tokenizer-path",
        ds.tokenizer_path,
    ]

    code, rep = _verify(capsys, *common, "--out", tmp_path / "local", "--pause", "0")
    assert code == 0, rep["reason"]
    assert rep["verdict"] == "verified"
    scores = {s["seed"]: s["log"]["val_bpb"] for s in rep["seeds"]}
    assert sorted(scores) == [42, 314, 1234]
    for s in rep["seeds"]:
        checks = {c["name"]: c["status"] for c in s["checks"]}
        assert checks["seed"] == checks["train_time"] == checks["eval_time"] == checks["size"] == "pass"
        assert checks["score"] == "warn"  # nothing claimed yet
        assert s["log"]["world_size"] == 2

    # the record now claims what the first pass measured; the submitit pass must reproduce it
    (folder / "submission.json").write_text(
        json.dumps(
            {
                "author": "t",
                "github_id": "t",
                "name": "Tiny",
                "date": "2026-01-01T00:00:00Z",
                "val_bpb": sum(scores.values()) / 3,
                "seed_results": {str(k): {"val_bpb": v} for k, v in scores.items()},
            }
        )
    )
    code, rep = _verify(
        capsys, *common, "--out", tmp_path / "slurm", "--backend", "slurm", "--slurm-cluster", "local", "--poll", "0.5"
    )
    assert code == 0, rep["reason"]
    assert rep["verdict"] == "verified" and rep["backend"].startswith("slurm via submitit (cluster=local")
    assert {s["seed"]: next(c["status"] for c in s["checks"] if c["name"] == "score") for s in rep["seeds"]} == {
        42: "pass",
        314: "pass",
        1234: "pass",
    }
