"""A train step on a 4x2 mesh of 8 simulated CPU devices matches one device (MHA, GQA, MQA);
a checkpoint saved on 4x2 restores on 2x4 and on one device. Runs in a subprocess so the
8-device XLA flag does not leak into other tests."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def mesh_result():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "helpers_mesh.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=HERE.parent,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("kv", ["kv4", "kv2", "kv1"])
def test_mesh_step_matches_one_device(mesh_result, kv):
    r = mesh_result[kv]
    for a, b in zip(r["loss_mesh"], r["loss_one"], strict=True):
        assert abs(a - b) < 1e-5
    assert r["max_param_diff"] < 1e-5
    # K/V heads shard on the model axis (size 2) only when the KV-head count divides.
    assert r["key_spec"] == ("P(None, None)" if kv == "kv1" else "P(None, 'model')")


def test_checkpoint_restores_on_another_mesh(mesh_result):
    for name in ("2x4", "1"):
        got = mesh_result["restore"][name]
        assert got["max_diff"] == 0.0 and got["step"] == 2
