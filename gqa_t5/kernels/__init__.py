"""Hand-written device kernels (Pallas), each beside the XLA path it must reproduce.

Every kernel here takes `implementation`: "xla" (the reference, used off-GPU by "auto"),
"pallas" (the Triton kernel, GPU only) or "interpret" (the same kernel run by Pallas'
interpreter on any backend: what CPU tests use).
"""
