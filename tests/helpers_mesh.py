"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: one train step on a 4x2 mesh
vs one device, and a checkpoint saved on 4x2 restored on 2x4 and on one device. Prints JSON."""

import json
import sys
import tempfile

import jax
import numpy as np

from gqa_t5 import checkpointing, optim
from gqa_t5.gin_utils import model_from_gin
from gqa_t5.partitioning import Partitioner
from gqa_t5.trainer import Trainer

jax.config.update("jax_default_matmul_precision", "highest")


def batch(seed=0, B=8, L=16, V=64):
    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, V, size=(B, L)).astype(np.int32)
    tgt[:, -3:] = 0
    dec_in = np.concatenate([np.zeros((B, 1), np.int32), tgt[:, :-1]], 1)
    return {
        "encoder_input_tokens": rng.integers(2, V, size=(B, L)).astype(np.int32),
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": (tgt > 0).astype(np.int32),
    }


def run(kv_heads, num_partitions, devices, dropout=0.0):
    model = model_from_gin(
        ["models/t5_1_1/tiny.gin"],
        ["VOCAB_SIZE = 64", f"NUM_KV_HEADS = {kv_heads}", f"DROPOUT_RATE = {dropout}"],
    )
    lr = optim.constant_schedule(0.01)
    p = Partitioner(num_partitions, num_kv_heads=kv_heads, devices=devices)
    tr = Trainer(model, optim.adafactor(lr), lr, p, 16, 16, seed=0)
    state = tr.init_state()
    losses = []
    for s in range(2):
        state, m = tr.train_step(state, p.host_batch_to_global(batch(s)))
        losses.append(float(m["loss"]))
    return tr, state, losses


out = {}
for kv in (4, 2, 1):
    tr8, s8, l8 = run(kv, 2, jax.devices())
    _, s1, l1 = run(kv, 1, jax.devices()[:1])
    diffs = jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
        s8["params"],
        s1["params"],
    )
    key_spec = s8["params"]["decoder"]["layers_0"]["self_attention"]["key"]["kernel"].sharding.spec
    out[f"kv{kv}"] = {
        "loss_mesh": l8,
        "loss_one": l1,
        "max_param_diff": max(jax.tree_util.tree_leaves(diffs)),
        "key_spec": str(key_spec),
    }
    if kv == 2:
        with tempfile.TemporaryDirectory() as d:
            ck = checkpointing.CheckpointManager(d, period=1)
            ck.save(2, s8, {"step": 2}, force=True)
            got = {}
            for name, (np_, devs) in {
                "2x4": (4, jax.devices()),
                "1": (1, jax.devices()[:1]),
            }.items():
                model = tr8.model
                lr = optim.constant_schedule(0.01)
                other = Trainer(
                    model,
                    optim.adafactor(lr),
                    lr,
                    Partitioner(np_, num_kv_heads=kv, devices=devs),
                    16,
                    16,
                )
                restored, _ = ck.restore(2, other.abstract_state)
                d_ = jax.tree_util.tree_map(
                    lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), restored, s8
                )
                leaf = restored["params"]["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
                got[name] = {
                    "max_diff": max(jax.tree_util.tree_leaves(d_)),
                    "mlp_spec": str(leaf.sharding.spec),
                    "step": int(restored["step"]),
                }
            out["restore"] = got
print("RESULT " + json.dumps(out))
sys.stdout.flush()
