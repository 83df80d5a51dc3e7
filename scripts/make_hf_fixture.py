"""Make tiny HuggingFace T5 checkpoints and their reference logits (tests/fixtures/hf_t5_tiny*).

Needs torch + transformers, which the project does not depend on; run it from a venv:
    python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch transformers safetensors
    /tmp/hfenv/bin/python scripts/make_hf_fixture.py
Writes, per variant: model.safetensors, config.json, reference.npz (input_ids,
attention_mask, decoder_input_ids, logits; float32) and versions.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
VARIANTS = {
    # T5.1.1: gated-GELU, untied logits.
    "hf_t5_tiny_v1_1": {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    # T5 1.0: ReLU, logits tied to the embedding (scaled by 1/sqrt(d_model)).
    "hf_t5_tiny_v1_0": {"feed_forward_proj": "relu", "tie_word_embeddings": True},
}


def make(name: str, overrides: dict, seed: int = 0) -> None:
    torch.manual_seed(seed)
    config = transformers.T5Config(
        vocab_size=100,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **overrides,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    tied = overrides["tie_word_embeddings"]
    if not tied:
        # NOTE: transformers 5 always ties lm_head to the embedding (tie_word_embeddings
        # only sets scale_decoder_outputs); T5.1.1 is untied, so give lm_head its own
        # weights, as the published T5.1.1 checkpoints have.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(100, 32))
        assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    with torch.no_grad():
        # Make every parameter matter: layer norms away from 1, position biases larger
        # than the default init so bucket mistakes change the logits.
        for pname, p in model.named_parameters():
            if "layer_norm" in pname:
                p.uniform_(0.5, 1.5)
            elif "relative_attention_bias" in pname:
                p.normal_(0.0, 1.0)
    gen = torch.Generator().manual_seed(seed + 1)
    # Length 40 covers the logarithmic buckets (distances 8..39, incl. 16 and 32).
    input_ids = torch.randint(2, 100, (2, 40), generator=gen)
    input_ids[1, 25:] = 0  # padding
    attention_mask = (input_ids > 0).long()
    labels = torch.randint(2, 100, (2, 24), generator=gen)
    decoder_input_ids = model._shift_right(labels)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
        ).logits
    out = ROOT / name
    out.mkdir(parents=True, exist_ok=True)
    _save(model, config, out, tied=overrides["tie_word_embeddings"])
    np.savez_compressed(
        out / "reference.npz",
        input_ids=input_ids.numpy().astype(np.int32),
        attention_mask=attention_mask.numpy().astype(np.int32),
        decoder_input_ids=decoder_input_ids.numpy().astype(np.int32),
        labels=labels.numpy().astype(np.int32),
        logits=logits.numpy().astype(np.float32),
    )
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "seed": seed,
    }
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        f"{out}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max():.3f}, "
        f"{size / 1e3:.0f} kB"
    )


def _save(model, config, out: Path, tied: bool) -> None:
    """model.safetensors (with lm_head.weight when untied) and a Hub-style config.json."""
    from safetensors.torch import save_file

    skip = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if tied:
        skip.add("lm_head.weight")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in skip}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["tie_word_embeddings"] = tied  # what the published configs say
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main() -> None:
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        make(name, overrides, seed=i)


if __name__ == "__main__":
    main()
