"""Synthetic Parameter Golf record written for pgolf's examples: a tiny GPT in the baseline's shape."""
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    seed = int(os.environ.get("SEED", 1337))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    num_layers = int(os.environ.get("NUM_LAYERS", 9))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", 4))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))


def load_tokens(pattern):
    import glob

    import numpy as np
    files = sorted(glob.glob(pattern))
    return torch.cat([torch.from_numpy(np.fromfile(f, dtype=np.uint16, offset=1024).astype(np.int64)) for f in files])


class GPT(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.emb = nn.Embedding(args.vocab_size, args.model_dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(args.model_dim, args.num_heads, 2 * args.model_dim, batch_first=True)
            for _ in range(args.num_layers)
        )
        self.head = nn.Linear(args.model_dim, args.vocab_size, bias=False)

    def forward(self, x, y):
        h = self.emb(x)
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        return F.cross_entropy(self.head(h).flatten(0, 1), y.flatten(), reduction="none")


def eval_val(model, val_tokens, seq_len, bytes_per_token):
    model.eval()
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, val_tokens.numel() - seq_len - 1, seq_len):
            x = val_tokens[i:i + seq_len].unsqueeze(0)
            y = val_tokens[i + 1:i + seq_len + 1].unsqueeze(0)
            loss_sum += model(x, y).sum().item()
            count += seq_len
    val_loss = loss_sum / count
    return val_loss, val_loss / math.log(2) / bytes_per_token


def main():
    args = Hyperparameters()
    torch.manual_seed(args.seed)
    print(f"seed:{args.seed}")
    model = GPT(args)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    train_tokens = load_tokens(args.train_files)
    val_tokens = load_tokens(args.val_files)
    start = time.time()
    for step in range(args.iterations):
        if time.time() - start > args.max_wallclock_seconds:
            break
        i = step * args.train_seq_len
        x = train_tokens[i:i + args.train_seq_len].unsqueeze(0)
        y = train_tokens[i + 1:i + args.train_seq_len + 1].unsqueeze(0)
        loss = model(x, y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    val_loss, val_bpb = eval_val(model, val_tokens, args.train_seq_len, 2.436)
    print(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


if __name__ == "__main__":
    main()
