"""Compares t5x.infer's predictions with gqa-t5's (`gqa_t5.infer`) for one task, in order.

    python scripts/compare_t5x_infer.py T5X_INFER_DIR GQA_T5_INFER_DIR --task kjv_summarize

t5x writes `<task>-predict.jsonl-00000-of-00001` lines {"inputs": {"inputs_pretokenized": ...},
"prediction": text}; gqa-t5 writes {"index", "inputs", "prediction"}. Both decode with
the task's vocabulary, so predictions are compared as text and as the token ids of that
text under the task's vocabulary. Prints a summary; writes `comparison.json` into
GQA_T5_INFER_DIR.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def _lines(directory: pathlib.Path, task: str) -> list[dict]:
    # t5x: <task>-predict.jsonl-00000-of-00001 (+ .COMPLETED); gqa-t5: <task>-<step>.jsonl
    files = sorted(f for f in directory.glob(f"{task}-*.jsonl*") if f.suffix != ".COMPLETED")
    if not files:
        sys.exit(f"compare_t5x_infer: no {task}-*.jsonl in {directory}; run the infer step first")
    return [json.loads(x) for x in files[-1].read_text().splitlines() if x.strip()]


def _input_text(rec: dict) -> str:
    inp = rec.get("inputs")
    return inp.get("inputs_pretokenized", "") if isinstance(inp, dict) else (inp or "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("t5x_dir", type=pathlib.Path)
    p.add_argument("gqa_t5_dir", type=pathlib.Path)
    p.add_argument("--task", required=True)
    p.add_argument("--module", default="tasks", help="module that registers the task")
    args = p.parse_args(argv)
    import importlib

    import seqio

    importlib.import_module(args.module)
    vocab = seqio.get_mixture_or_task(args.task).output_features["targets"].vocabulary
    a, b = _lines(args.t5x_dir, args.task), _lines(args.gqa_t5_dir, args.task)
    if len(a) != len(b):
        sys.exit(f"compare_t5x_infer: {len(a)} t5x predictions vs {len(b)} gqa-t5 predictions")
    same_input = sum(_input_text(x) == _input_text(y) for x, y in zip(a, b, strict=True))
    same_text = same_tokens = tokens = token_match = 0
    for x, y in zip(a, b, strict=True):
        ta, tb = vocab.encode(x["prediction"]), vocab.encode(y["prediction"])
        same_text += x["prediction"] == y["prediction"]
        same_tokens += ta == tb
        tokens += max(len(ta), len(tb))
        token_match += sum(p == q for p, q in zip(ta, tb, strict=False))
    result = {
        "task": args.task,
        "examples": len(a),
        "same_inputs": same_input,
        "identical_predictions": same_text,
        "identical_token_sequences": same_tokens,
        "token_agreement": token_match / max(tokens, 1),
        "t5x": str(args.t5x_dir),
        "gqa_t5": str(args.gqa_t5_dir),
    }
    (args.gqa_t5_dir / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.task}: {same_tokens}/{len(a)} identical token sequences, {same_text}/{len(a)} "
        f"identical texts, token agreement {result['token_agreement']:.4f} "
        f"(inputs aligned {same_input}/{len(a)})"
    )
    return 0 if same_input == len(a) else 1


if __name__ == "__main__":
    sys.exit(main())
