"""t5x's on-disk layouts: fixtures written by real t5x, and gqa-t5's t5x-layout writer."""

import json
import pathlib
import zlib

import numpy as np
import pytest

from gqa_t5 import convert
from gqa_t5.checkpoints import (
    CheckpointError,
    detect_format,
    open_checkpoint,
    orbax_params,
    t5x_writer,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "t5x_tiny"  # make_t5x_fixtures.py
LEGACY = FIXTURES / "legacy" / "checkpoint_1000"
ORBAX = FIXTURES / "orbax" / "checkpoint_1000"


def _reference() -> dict:
    return {k.replace("|", "/"): v for k, v in np.load(FIXTURES / "reference.npz").items()}


@pytest.mark.parametrize(
    "path, fmt",
    [
        (LEGACY, "t5x"),  # checkpoint_N/checkpoint + zarr arrays
        (ORBAX, "t5x_orbax"),  # checkpoint_N/_CHECKPOINT_METADATA + state/
        (ORBAX / "state", "t5x_orbax"),  # the Orbax tree itself
    ],
)
def test_real_t5x_layouts_are_detected_and_read_exactly(path, fmt):
    ref = _reference()
    assert detect_format(path) == fmt
    reader = open_checkpoint(path)
    assert reader.hints["step"] == 1000
    assert reader.shapes() == {n: a.shape for n, a in ref.items()}
    for name, array in reader.iter_tensors():
        np.testing.assert_array_equal(array, ref[name], err_msg=name)


@pytest.mark.parametrize("run", [FIXTURES / "legacy", FIXTURES / "orbax"])
def test_run_directory_names_its_step_directories(run):
    with pytest.raises(CheckpointError, match=r"t5x run directory.*checkpoint_1000"):
        detect_format(run)


def test_directory_of_no_layout_is_a_clear_error(tmp_path):
    (tmp_path / "state").mkdir()  # a step-directory look-alike without a checkpoint in it
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a recognised checkpoint.*checkpoint_N"):
        detect_format(tmp_path)


def test_adafactor_slot_shapes_follow_t5x_heuristic():
    # Hand-derived from t5x.adafactor.Adafactor.init_param_state (min_dim_size_to_factor 128).
    s = t5x_writer.adafactor_slot_shapes
    assert s((512, 1024)) == {"m": (1,), "v": (1,), "v_row": (512,), "v_col": (1024,)}
    assert s((1024, 512)) == {"m": (1,), "v": (1,), "v_row": (512,), "v_col": (1024,)}
    assert s((256, 256)) == {"m": (1,), "v": (1,), "v_row": (256,), "v_col": (256,)}
    assert s((64, 32128)) == {"m": (1,), "v": (64, 32128), "v_row": (1,), "v_col": (1,)}
    assert s((4096,)) == {"m": (1,), "v": (4096,), "v_row": (1,), "v_col": (1,)}
    assert s((8, 20), min_dim_size_to_factor=4)["v_col"] == (20,)


def test_writer_matches_the_train_state_real_t5x_wrote(tmp_path):
    """Same keys, shapes and dtypes as t5x's own Orbax save; params and step round-trip."""
    ref = _reference()
    real = orbax_params.flatten(t5x_writer.restore_train_state(ORBAX))
    step_dir = t5x_writer.save_t5x(
        tmp_path / "out", orbax_params.unflatten(ref), step=1000, min_dim_size_to_factor=4
    )
    assert step_dir == tmp_path / "out" / "checkpoint_1000"
    assert {"_CHECKPOINT_METADATA", "state"} <= {p.name for p in step_dir.iterdir()}
    assert detect_format(step_dir) == "t5x_orbax"
    mine = orbax_params.flatten(t5x_writer.restore_train_state(step_dir))
    assert sorted(mine) == sorted(real)
    for k in real:
        assert (mine[k].shape, mine[k].dtype) == (real[k].shape, real[k].dtype), k
    factored = [k for k in mine if k.endswith("/v_row") and mine[k].shape != (1,)]
    assert "state/param_states/encoder/layers_0/mlp/wi_0/kernel/v_row" in factored
    assert int(mine["state/step"]) == 1000 and mine["state/step"].dtype == np.int32
    for name, a in ref.items():
        np.testing.assert_array_equal(mine[f"target/{name}"], a)
        for slot in t5x_writer.SLOTS:
            assert not mine[f"state/param_states/{name}/{slot}"].any()
    back = open_checkpoint(step_dir)
    for name, array in back.iter_tensors():
        np.testing.assert_array_equal(array, ref[name])


def test_convert_to_t5x_layout_groups_kv_and_keeps_the_step(tmp_path):
    ref = _reference()
    out = tmp_path / "gqa"
    record = convert.convert_checkpoint(
        ORBAX, out, num_kv_heads=2, output_format="t5x", log=lambda s: None
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gqa"]  # nothing half-written left
    assert record["t5x_step_dir"] == str(out / "checkpoint_1000")
    assert json.loads((out / "conversion.json").read_text())["output_format"] == "t5x"
    state = orbax_params.flatten(t5x_writer.restore_train_state(out / "checkpoint_1000"))
    k = ref["decoder/layers_1/self_attention/key/kernel"]  # [D, 4 heads * 2]
    D, H = k.shape[0], 2
    expected = k.astype(np.float64).reshape(D, 2, 2, H).mean(axis=2).reshape(D, 2 * H)
    got = state["target/decoder/layers_1/self_attention/key/kernel"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert state["state/param_states/decoder/layers_1/self_attention/key/kernel/v"].shape == (
        D,
        2 * H,
    )
    np.testing.assert_array_equal(
        state["target/encoder/layers_0/attention/key/kernel"],
        ref["encoder/layers_0/attention/key/kernel"],
    )
    assert int(state["state/step"]) == 1000
    # conversion.json's checksums (independent: zlib over the restored float32 bytes) and a
    # model.gin that names the converted sizes, beside checkpoint_1000/.
    record = json.loads((out / "conversion.json").read_text())
    targets = {k[len("target/") :]: v for k, v in state.items() if k.startswith("target/")}
    assert set(record["checksums"]) == set(targets)
    for name, array in targets.items():
        crc = zlib.crc32(np.ascontiguousarray(array, np.float32).tobytes())
        assert record["checksums"][name] == f"crc32:{crc:08x}", name
    gin_text = (out / "model.gin").read_text()
    assert "NUM_KV_HEADS = 2" in gin_text and record["model_gin"] == "model.gin"
    with pytest.raises(CheckpointError, match="output_format"):
        convert.convert_checkpoint(ORBAX, tmp_path / "x", num_kv_heads=2, output_format="zip")
