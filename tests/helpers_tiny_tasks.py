"""MIXTURE_OR_TASK_MODULE for subprocess tests: registers the tiny tasks from $GQA_T5_TINY_TASK_DIR."""

import os

from gqa_t5 import testing

testing.register_tiny_tasks(os.environ["GQA_T5_TINY_TASK_DIR"])
