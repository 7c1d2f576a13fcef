"""pgolf-train new / synth-data / package, and the packaged folder through pgolf-audit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from reference_trainer import train_gpt as T
from reference_trainer.cli import cli
from reference_trainer.package import REFERENCE_SCRIPT
from reference_trainer.synthetic import export_synthetic_dataset, tiny_env


def train(workdir: Path, env: dict[str, str]) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.chdir(workdir)
        torch.set_num_threads(1)
        assert T.main() == 0
    return workdir / "logs" / f"{env['RUN_ID']}.txt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ds = export_synthetic_dataset(root / "data", n_docs=300, val_docs=30)
    logs = {}
    for seed in (1337, 42):
        logs[("plain", seed)] = train(
            root, tiny_env(ds, RUN_ID=f"plain{seed}", SEED=seed, EVAL_STRIDE=16, ARTIFACT_DIR=str(root / f"a{seed}"))
        )
    logs[("ttt", 7)] = train(
        root,
        tiny_env(
            ds,
            RUN_ID="ttt7",
            SEED=7,
            TTT_ENABLED=1,
            TTT_CHUNK_TOKENS=2048,
            TTT_EPOCHS=1,
            ARTIFACT_DIR=str(root / "attt"),
        ),
    )
    return ds, logs


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_new_creates_a_skeleton_and_refuses_a_non_empty_folder(tmp_path):
    r = invoke("new", tmp_path / "rec", "--name", "My run", "--author", "me")
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["README.md", "requirements.txt", "submission.json", "train_gpt.py"]
    assert (tmp_path / "rec" / "train_gpt.py").read_bytes() == REFERENCE_SCRIPT.read_bytes()
    assert json.loads((tmp_path / "rec" / "submission.json").read_text())["name"] == "My run"
    again = invoke("new", tmp_path / "rec")
    assert again.exit_code == 2 and "not an empty folder" in again.output


def test_synth_data_writes_the_official_layout(tmp_path):
    r = invoke("synth-data", tmp_path / "d", "--docs", 120, "--val-docs", 10)
    assert r.exit_code == 0, r.output
    env = dict(re.findall(r"^export (\w+)=(.*)$", r.stdout, re.M))
    data = Path(env["DATA_PATH"])
    assert (data / "fineweb_val_000000.bin").is_file() and list(data.glob("fineweb_train_*.bin"))
    assert Path(env["TOKENIZER_PATH"]).name == f"fineweb_{env['VOCAB_SIZE']}_bpe.model"
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["tokenizers"][0]["vocab_size"] == int(
        env["VOCAB_SIZE"]
    )
    bad = invoke("synth-data", tmp_path / "e", "--docs", 10, "--val-docs", 10)
    assert bad.exit_code == 2 and "must be smaller" in bad.output


def test_package_fills_readme_and_submission_from_the_logs(tmp_path, runs):
    ds, logs = runs
    out = tmp_path / "2026-01-01_Tiny"
    r = invoke(
        "package",
        out,
        "--logs",
        logs[("plain", 1337)],
        "--logs",
        logs[("plain", 42)],
        "--author",
        "me",
        "--github-id",
        "me",
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "requirements.txt",
        "submission.json",
        "train_gpt.py",
        "train_seed1337.log",
        "train_seed42.log",
    ]
    data = json.loads((out / "submission.json").read_text())
    for seed in (1337, 42):
        text = (out / f"train_seed{seed}.log").read_text()
        final = re.findall(r"^final_int8_zlib_sliding_window_exact val_loss:(\S+) val_bpb:(\S+)$", text, re.M)[-1]
        assert data["seed_results"][str(seed)]["val_bpb"] == float(final[1])
        total = int(re.findall(r"^Total submission size int8\+zlib: (\d+) bytes$", text, re.M)[-1])
        assert data["seed_results"][str(seed)]["artifact_bytes"] == total
    assert data["val_bpb"] == pytest.approx(
        (data["seed_results"]["1337"]["val_bpb"] + data["seed_results"]["42"]["val_bpb"]) / 2
    )
    assert data["seed_results"]["42"]["scored_line"] == "final_int8_zlib_sliding_window_exact"
    assert (
        data["seeds"] == [42, 1337]
        and "val_bpb_std" in data
        and data["bytes_code"] == len(REFERENCE_SCRIPT.read_bytes())
    )
    readme = (out / "README.md").read_text()
    section = readme.split("## Run command")[1].split("##")[0]
    command = section.split("```bash")[1].split("```")[0]
    # The logs say world_size:1 on CPU: the command runs one process and carries no CPU-only or local settings.
    assert "SEED=42 torchrun --standalone --nproc_per_node=1 train_gpt.py" in command
    assert "EVAL_STRIDE=16" in command and "RUN_ID" not in command
    assert "DEVICE=" not in command and "COMPILE=" not in command and str(ds.root) not in command
    assert f"DATA_PATH=./data/datasets/{ds.data_path.name} " in command
    assert "`DEVICE=cpu` left out (CPU-only)" in section
    assert "Hardware (from the logs): CPU (1 process, DEVICE=cpu)" in readme and data["hardware"].startswith("CPU")


@pytest.mark.parametrize("problem", ["duplicate", "missing", "unfinished", "other_script", "mixed_settings"])
def test_package_rejects_bad_input(tmp_path, runs, problem):
    _, logs = runs
    args = ["package", tmp_path / "out"]
    if problem == "duplicate":
        args += ["--logs", logs[("plain", 42)], "--logs", logs[("plain", 42)]]
    elif problem == "missing":
        args += ["--logs", tmp_path / "nope.log"]
    elif problem == "unfinished":
        cut = tmp_path / "cut.log"
        cut.write_text(logs[("plain", 42)].read_text().split("Serialized model:")[0])
        args += ["--logs", cut]
    elif problem == "other_script":
        other = tmp_path / "train_gpt.py"
        other.write_text(REFERENCE_SCRIPT.read_text() + "\n# edited\n")
        args += ["--logs", logs[("plain", 42)], "--script", other]
    else:
        args += ["--logs", logs[("plain", 42)], "--logs", logs[("ttt", 7)]]
    r = invoke(*args)
    assert r.exit_code == 2
    assert r.output.startswith("pgolf-train: error: ") or "Error:" in r.output
    assert "Traceback" not in r.output


def _verdict_without_val_subset(folder: Path):
    """Audit the packaged folder. Synthetic data is necessarily a 'subset of the validation split' (PG230, an
    integrity error); apart from that one expected finding the verdict must be decided by the code."""
    api = pytest.importorskip("audit.api")
    from audit.verdict import decide

    report = api.audit_folder(str(folder))
    rest = [f for f in report.findings if f.rule != "PG230/val-subset"]
    assert {f.rule for f in report.findings} - {f.rule for f in rest} <= {"PG230/val-subset"}
    errors = [f for f in rest if f.severity.name == "ERROR"]
    assert not errors, [(f.rule, f.message) for f in errors]
    return decide(rest).verdict, rest


def test_packaged_run_audits_clean(tmp_path, runs):
    _, logs = runs
    out = tmp_path / "2026-01-01_TinyClean"
    assert invoke("package", out, "--logs", logs[("plain", 1337)], "--logs", logs[("plain", 42)]).exit_code == 0
    verdict, findings = _verdict_without_val_subset(out)
    assert verdict == "clean", [(f.rule, f.severity.name, f.message) for f in findings]


def test_packaged_ttt_run_audits_legal_ttt(tmp_path, runs):
    _, logs = runs
    out = tmp_path / "2026-01-01_TinyTTT"
    assert invoke("package", out, "--logs", logs[("ttt", 7)]).exit_code == 0
    assert "TTT_ENABLED=1" in (out / "README.md").read_text()
    verdict, findings = _verdict_without_val_subset(out)
    assert verdict == "legal_ttt", [(f.rule, f.severity.name, f.message) for f in findings]


def test_package_takes_the_world_size_from_the_logs_and_refuses_a_contradiction(tmp_path, runs):
    _, logs = runs
    args = ["package", tmp_path / "out", "--logs", logs[("plain", 1337)], "--logs", logs[("plain", 42)]]
    r = invoke(*args, "--nproc", 8)
    assert r.exit_code == 2 and "--nproc 8 but the logs say world_size:1" in r.output
    assert not (tmp_path / "out").exists()
    assert invoke(*args, "--nproc", 1).exit_code == 0
    # Seeds run on different setups are not one record.
    other = tmp_path / "ws2.log"
    text = logs[("plain", 42)].read_text()
    other.write_text(text.replace("world_size:1 grad_accum_steps:1", "world_size:2 grad_accum_steps:1"))
    r = invoke("package", tmp_path / "out2", "--logs", logs[("plain", 1337)], "--logs", other)
    assert r.exit_code == 2 and "disagree on the world_size" in r.output
    gpu = tmp_path / "gpu.log"
    gpu.write_text(text.replace('"device": "cpu", "gpu": null', '"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"'))
    r = invoke("package", tmp_path / "out3", "--logs", logs[("plain", 1337)], "--logs", gpu)
    assert r.exit_code == 2 and "disagree on the device" in r.output


def test_run_command_for_gpu_logs_keeps_gpu_settings_and_rewrites_data_paths():
    from reference_trainer.package import SeedRun, hardware_text, reproduction_env

    env, notes = reproduction_env(
        {
            "DEVICE": "cuda",
            "COMPILE": "0",
            "DATA_PATH": "/scratch/me/data/datasets/fineweb10B_sp1024",
            "TOKENIZER_PATH": "/scratch/me/tok/fineweb_4096_bpe.model",
            "QUANT_BITS": "6",
        },
        "cuda",
    )
    assert env == {
        "DEVICE": "cuda",
        "COMPILE": "0",
        "TOKENIZER_PATH": "./data/tokenizers/fineweb_4096_bpe.model",
        "QUANT_BITS": "6",
    }
    assert len(notes) == 2 and "left out: the default layout" in notes[0]
    run = SeedRun(Path("x"), 1, 1.0, 1.0, "t", 1, 1, 1, 1.0, 1.0, 1.0, device="cuda", gpu="NVIDIA H100 80GB HBM3")
    assert hardware_text(run, 8) == "8×NVIDIA H100 80GB HBM3"
    assert hardware_text(run, 1) == "1×NVIDIA H100 80GB HBM3 (the track's timed runs are 8×H100)"


def test_packager_data_defaults_are_the_trainers():
    from reference_trainer.package import DEFAULT_DATA_PATH, DEFAULT_TOKENIZER_PATH

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DATA_PATH", raising=False)
        mp.delenv("TOKENIZER_PATH", raising=False)
        h = T.Hyperparameters()
    assert (h.data_path, h.tokenizer_path) == (DEFAULT_DATA_PATH, DEFAULT_TOKENIZER_PATH)
