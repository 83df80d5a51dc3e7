"""gqa-t5: grouped-query attention for T5 encoder-decoders in JAX/Flax."""

__version__ = "0.1.0"

from gqa_t5 import errors as _errors  # noqa: E402

_errors.quiet_cli_start()  # commands hide TensorFlow's C++ start-up lines unless --verbose
