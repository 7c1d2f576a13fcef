"""pgolf-train: record-folder skeletons, offline synthetic data, and packaging runs into a record folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audit.clirun import VERSION, fail, run_click

from .package import REFERENCE_SCRIPT, PackageError, build_record, new_record, pack_source, unpack_source


def _fail(msg: str) -> None:
    fail("pgolf-train", msg)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pgolf-train")
def cli() -> None:
    """Produce Parameter Golf submissions with pgolf's reference trainer (reference_trainer/train_gpt.py)."""


@cli.command("new")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Record name (default: the folder name).")
@click.option("--author", default="", help="Author for submission.json.")
@click.option("--github-id", default="", help="GitHub id for submission.json.")
@click.option("--blurb", default="", help="One-line description.")
def new_cmd(folder: Path, name: str | None, author: str, github_id: str, blurb: str) -> None:
    """Create a record folder skeleton with the reference train_gpt.py."""
    try:
        out = new_record(folder, name=name or folder.name, author=author, github_id=github_id, blurb=blurb)
    except (PackageError, OSError) as e:
        _fail(str(e))
    click.echo(f"created {out}", err=True)


@cli.command("synth-data")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--docs", default=600, show_default=True, type=click.IntRange(2, 1_000_000))
@click.option("--val-docs", default=60, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--vocab-size",
    default=400,
    show_default=True,
    type=click.IntRange(300, 65_536),
    help="Requested SentencePiece vocab (byte fallback needs >= ~300; the real size is read back).",
)
@click.option("--shard-tokens", default=16_384, show_default=True, type=click.IntRange(64, 10**8))
@click.option("--normalization", default="nmt_nfkc", show_default=True, type=click.Choice(["nmt_nfkc", "identity"]))
def synth_data_cmd(
    folder: Path, seed: int, docs: int, val_docs: int, vocab_size: int, shard_tokens: int, normalization: str
) -> None:
    """Write an offline synthetic dataset + tokenizer in the official layout; print the env to train on it."""
    from .synthetic import export_synthetic_dataset

    if val_docs >= docs:
        _fail(f"--val-docs ({val_docs}) must be smaller than --docs ({docs})")
    try:
        ds = export_synthetic_dataset(
            folder,
            seed=seed,
            n_docs=docs,
            val_docs=val_docs,
            vocab_size=vocab_size,
            shard_tokens=shard_tokens,
            normalization=normalization,
        )
    except (ValueError, RuntimeError, OSError) as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    click.echo(
        f"wrote {ds.train_shards} train shard(s) ({ds.train_tokens} tokens) and {ds.val_tokens} val tokens "
        f"to {ds.data_path}",
        err=True,
    )
    for k, v in ds.env().items():
        click.echo(f"export {k}={v}")


@cli.command("package")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--logs",
    "logs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A train_gpt.py log (logs/<RUN_ID>.txt or the console capture); repeat once per seed.",
)
@click.option(
    "--script",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The train_gpt.py that produced the logs (default: FOLDER/train_gpt.py, else the reference).",
)
@click.option("--name", default=None, help="Record name (default: the folder name).")
@click.option("--author", default="", help="Author for submission.json.")
@click.option("--github-id", default="", help="GitHub id for submission.json.")
@click.option("--blurb", default="", help="One-line description.")
@click.option(
    "--nproc",
    default=None,
    type=click.IntRange(1, 64),
    help="GPUs per node in the README's torchrun command (default: the logs' world_size; must agree).",
)
@click.option(
    "--pack",
    is_flag=True,
    help="Ship train_gpt.py as a packed wrapper (lzma + base85); the logs must come from running it.",
)
def package_cmd(
    folder: Path,
    logs: tuple[Path, ...],
    script: Path | None,
    name: str | None,
    author: str,
    github_id: str,
    blurb: str,
    nproc: int | None,
    pack: bool,
) -> None:
    """Assemble FOLDER as a record folder from the logs of finished runs (one per seed)."""
    try:
        out = build_record(
            folder,
            list(logs),
            script=script,
            name=name or folder.name,
            author=author,
            github_id=github_id,
            blurb=blurb,
            nproc=nproc,
            pack=pack,
        )
    except (PackageError, OSError) as e:
        _fail(str(e))
    click.echo(f"packaged {len(logs)} run(s) into {out}", err=True)


@cli.command("pack")
@click.argument("script", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=False)
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the packed wrapper (run it in place of the script).",
)
def pack_cmd(script: Path | None, out: Path) -> None:
    """Write the packed wrapper of SCRIPT (default: the reference train_gpt.py): the script, lzma-compressed and
    base85-encoded in a five-line Python file that runs it. Train with the wrapper, then `package --pack`."""
    src = (script or REFERENCE_SCRIPT).read_bytes()
    if unpack_source(src) is not None:
        _fail(f"{script} is already a packed wrapper")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(pack_source(src))
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror}")
    click.echo(f"wrote {out}: {out.stat().st_size} bytes (script {len(src)} bytes)", err=True)


@cli.command("unpack")
@click.argument("wrapper", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def unpack_cmd(wrapper: Path) -> None:
    """Print the readable script a packed train_gpt.py carries (decoded, never executed)."""
    source = unpack_source(wrapper.read_bytes())
    if source is None:
        _fail(f"{wrapper} is not a train_gpt.py packed by pgolf-train")
    sys.stdout.write(source.decode("utf-8", errors="replace"))


def main(argv: list[str] | None = None) -> None:
    run_click(cli, "pgolf-train", argv, (PackageError,))


if __name__ == "__main__":  # pragma: no cover
    main()
