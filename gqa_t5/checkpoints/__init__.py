"""Checkpoint readers (t5x, Mesh-TF, HuggingFace, gqa-t5 Orbax) and the Orbax writer."""
