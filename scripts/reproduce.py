"""Reproduce the paper's Table 1 and figures (thin wrapper over `python -m gqa_t5.reproduce`)."""

from gqa_t5.reproduce import console_main

if __name__ == "__main__":
    console_main()
