"""Data-preparation status (tasks.missing_data) and scripts/prepare_data.py."""

import importlib.util
import json
import pathlib

import tasks

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts/prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_data_reports_each_dataset(tmp_path):
    ready = tmp_path / "tfds" / "cnn_dailymail" / "3.4.0"
    ready.mkdir(parents=True)
    (ready / "dataset_info.json").write_text("{}")
    (tmp_path / "ms").mkdir()
    for f in ("news_dialogue.json", "train_val_test_split.json"):
        (tmp_path / "ms" / f).write_text("[]")
    status = tasks.missing_data(str(tmp_path / "tfds"), str(tmp_path / "ms"))
    assert set(status) == set(tasks.ALL_TASKS)
    assert status[tasks.CNN_DAILYMAIL] is None and status[tasks.MEDIA_SUM] is None
    assert "tfds build scientific_papers/arxiv:1.1.1" in status[tasks.ARXIV]
    assert "--beam_pipeline_options" in status[tasks.C4_SPAN_CORRUPTION]
    status = tasks.missing_data(str(tmp_path / "tfds"), str(tmp_path / "nothing"))
    assert "github.com/zcgzcgzcg1/MediaSum" in status[tasks.MEDIA_SUM]


def test_prepare_data_check_exits_nonzero_and_writes_json(tmp_path, capsys):
    script = _load_script()
    out = tmp_path / "status.json"
    rc = script.main(
        [
            "--check",
            "--data_dir",
            str(tmp_path),
            "--media_sum_dir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert rc == 1
    payload = json.loads(out.read_text())
    assert payload["tfds_data_dir"] == str(tmp_path)
    assert all(payload["missing"][name] for name in tasks.ALL_TASKS)
    assert "summary: 0/8 datasets ready" in capsys.readouterr().out


def test_prepare_data_rejects_unknown_task(tmp_path):
    script = _load_script()
    try:
        script.main(["--build", "gqa_nope", "--data_dir", str(tmp_path)])
    except SystemExit as e:
        assert "gqa_nope" in str(e.code)
    else:
        raise AssertionError("expected SystemExit")
