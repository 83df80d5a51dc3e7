"""Device mesh, logical-axis rules and parameter shardings (t5x's partitioning, jax.sharding).

The mesh has a `data` axis (batch) and a `model` axis (heads, mlp, vocab). Key/value
projections (`joined_kv_heads`) go on `model` only when the model-axis size divides the
number of key/value heads; otherwise they are replicated, so GQA-8 on a model axis of 16
or MQA never splits one head across devices. Any other dimension that the mesh
axis does not divide is replicated too.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import flax
import jax
import numpy as np
from flax.linen import partitioning as nn_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, str | None]]


def maybe_initialize_distributed(coordinator_address: str | None = None) -> None:
    """Start `jax.distributed` on multi-host runs (a coordinator address is set)."""
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address and not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=address)
        logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def create_mesh(num_partitions: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over all devices; `num_partitions` is the model-axis size."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if num_partitions < 1 or n % num_partitions:
        raise ValueError(
            f"num_partitions={num_partitions} must divide the device count {n}; set "
            f"--gin.partitioning.Partitioner.num_partitions to one of "
            f"{[d for d in range(1, n + 1) if n % d == 0]}"
        )
    grid = np.asarray(devices).reshape(n // num_partitions, num_partitions)
    return Mesh(grid, ("data", "model"))


def standard_logical_axis_rules(num_kv_heads: Any, model_size: int) -> list:
    """Logical name -> mesh axis; key/value heads on `model` only where they divide.

    `num_kv_heads` is an int or T5Config's per-layer form: one rule covers every layer, so
    key/value heads are sharded only if every layer's count divides the model axis.
    """
    divides = num_kv_heads is not None and all(
        k % model_size == 0 for k in _kv_counts(num_kv_heads)
    )
    kv_axis = "model" if divides else None
    return [
        ("batch", "data"),
        ("vocab", "model"),
        ("mlp", "model"),
        ("heads", "model"),
        ("joined_kv", "model"),
        ("kv", None),
        ("joined_kv_heads", kv_axis),
        ("embed", None),
        ("length", None),
        ("relpos_buckets", None),
    ]


def _spec_for(names: Sequence[str | None], shape: Sequence[int], rules: LogicalRules, mesh: Mesh):
    table = dict(rules)
    out = []
    for name, dim in zip(names, shape, strict=True):
        axis = table.get(name) if name is not None else None
        if axis is not None and (dim % mesh.shape[axis] or axis in out):
            axis = None
        out.append(axis)
    return PartitionSpec(*out)


class Partitioner:
    """Holds the mesh and rules; maps parameters, batches and activations onto devices."""

    def __init__(
        self,
        num_partitions: int = 1,
        num_kv_heads: Any = None,  # an int, or T5Config's per-layer form
        logical_axis_rules: LogicalRules | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.mesh = create_mesh(num_partitions, devices)
        self.rules = list(
            logical_axis_rules or standard_logical_axis_rules(num_kv_heads, num_partitions)
        )

    @property
    def data_size(self) -> int:
        return self.mesh.shape["data"]

    def param_shardings(self, params_axes, params_shapes):
        """NamedShardings for `params` from flax's `params_axes` collection."""
        names = flax.core.unfreeze(nn_partitioning.get_axis_names(params_axes))

        def one(spec, shape):
            return NamedSharding(
                self.mesh, _spec_for(tuple(spec), shape.shape, self.rules, self.mesh)
            )

        return jax.tree_util.tree_map(
            one, names, params_shapes, is_leaf=lambda x: isinstance(x, PartitionSpec)
        )

    def param_specs(self, params_axes, params_shapes):
        return jax.tree_util.tree_map(
            lambda s: s.spec, self.param_shardings(params_axes, params_shapes)
        )

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @contextlib.contextmanager
    def activation_context(self) -> Iterator[None]:
        """Mesh and rules in scope, so the network's activation constraints apply."""
        with jax.set_mesh(self.mesh), nn_partitioning.axis_rules(self.rules):
            yield

    def host_batch_to_global(self, batch: dict) -> dict:
        """Assemble this host's slice of the batch into global arrays sharded over `data`."""
        return {
            k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
            for k, v in batch.items()
        }


def _kv_counts(num_kv_heads: Any) -> set[int]:
    """{G} for an int; every layer's (and block's) count for a per-layer sequence."""
    one = lambda e: isinstance(e, int | np.integer)
    if one(num_kv_heads):
        return {int(num_kv_heads)}
    return {int(k) for e in num_kv_heads for k in ([e] if one(e) else e)}
