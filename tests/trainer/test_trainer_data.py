"""Shard format, loaders and validation loading of the reference trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_trainer import train_gpt as T
from reference_trainer.synthetic import read_shard, write_shard


def test_shard_round_trip(tmp_path):
    toks = np.array([1, 0, 65535, 7, 300, 1, 2], dtype=np.int64)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, toks)
    assert path.stat().st_size == 1024 + 2 * toks.size
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[:3].tolist() == [20240520, 1, toks.size] and not header[3:].any()
    assert T.load_data_shard(path).to(torch.int64).tolist() == toks.tolist()
    assert read_shard(path).tolist() == toks.tolist()


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "magic":
        data[0:4] = np.int32(20240521).tobytes()
    elif how == "version":
        data[4:8] = np.int32(2).tobytes()
    elif how == "count":
        data[8:12] = np.int32(11).tobytes()
    elif how == "truncated":
        data = data[:-2]
    elif how == "trailing":
        data += b"\x00\x00"
    elif how == "short_header":
        data = data[:600]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["magic", "version", "count", "truncated", "trailing", "short_header"])
def test_corrupt_shards_are_rejected(tmp_path, how):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(10))
    _corrupt(path, how)
    with pytest.raises(ValueError):
        T.load_data_shard(path)
    with pytest.raises(ValueError):
        read_shard(path)


def test_write_shard_rejects_out_of_range_ids(tmp_path):
    with pytest.raises(ValueError):
        write_shard(tmp_path / "x.bin", [1, 70000])


def _shards(tmp_path, sizes):
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n) % 60000)
        start += n
    return str(tmp_path / "fineweb_train_*.bin"), start


def test_token_stream_reads_in_order_and_wraps(tmp_path):
    pattern, total = _shards(tmp_path, [5, 3, 4])
    stream = T.TokenStream(pattern)
    got = torch.cat([stream.take(5), stream.take(6), stream.take(4)]).tolist()
    assert got == list(range(12)) + [0, 1, 2]


def test_rank_slices_tile_the_stream_and_targets_shift_by_one(tmp_path):
    pattern, _ = _shards(tmp_path, [40, 50, 60])
    world, seq, accum, global_tokens = 2, 4, 2, 32
    loaders = [T.DistributedTokenLoader(pattern, r, world, torch.device("cpu")) for r in range(world)]
    local = global_tokens // (world * accum)
    for call in range(3):
        batches = [ld.next_batch(global_tokens, seq, accum) for ld in loaders]
        base = call * (local + 1) * world
        for r, (x, y) in enumerate(batches):
            start = base + r * (local + 1)
            assert x.reshape(-1).tolist() == list(range(start, start + local))
            assert y.reshape(-1).tolist() == list(range(start + 1, start + local + 1))
            assert x.shape == (local // seq, seq)


def test_validation_tokens_truncate_to_whole_sequences_and_skip_byte_sidecars(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(23))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.full(23, 9))
    val = T.load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), 5)
    assert val.tolist() == list(range(21))  # floor(22 / 5) * 5 + 1
    with pytest.raises(ValueError):
        T.load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), 50)
    with pytest.raises(FileNotFoundError):
        T.load_validation_tokens(str(tmp_path / "nothing_*.bin"), 5)
