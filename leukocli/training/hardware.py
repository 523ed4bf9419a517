"""Numeric precision and distribution strategy: resolving `auto` on the machine at hand."""

from __future__ import annotations

import os
from pathlib import Path

from .._tf import tf
from .._util.progress import SILENT, Reporter, spoken
from ..errors import opt
from .options import PRECISIONS, STRATEGIES, choose


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bfloat16 math (AVX512_BF16 or AMX), where bf16 pays off."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_precision(name: str) -> str:
    """Resolve --precision: auto = mixed_float16 on GPU, mixed_bfloat16 on bf16 CPUs, else fp32."""
    key = choose(name or "auto", PRECISIONS, "precision")
    if key != "auto":
        return key
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_fast_bf16() else "float32"


def worker_timeout() -> float:
    """Seconds a worker waits for the others in a collective before giving up.

    Without a limit, a worker whose peer died waits forever. LEUKO_WORKER_TIMEOUT
    overrides the default of 120 s (a slow first step must still fit inside it).
    """
    text = os.environ.get("LEUKO_WORKER_TIMEOUT", "")
    try:
        return max(1.0, float(text)) if text else 120.0
    except ValueError:
        return 120.0


def _reduce_leaf_by_leaf(strategy: tf.distribute.Strategy) -> None:
    """Make `strategy.reduce` take what Keras 3's fit gives it under several workers.

    Keras 3 (keras-team/keras#20585) reduces a nested (x, y, weight) batch in one call,
    which MultiWorkerMirroredStrategy's collective reduce refuses ("Attempt to convert a
    value (PerReplica...)"), and it reduces scalar losses along axis 0, which has none.
    Here each leaf is reduced on its own, scalars without an axis. Every worker reduces
    the same leaves in the same order, so the collectives still match.
    """
    whole = strategy.reduce

    def one(reduce_op: object, v: object, axis: object) -> object:
        local = (strategy.experimental_local_results(v)[0]
                 if isinstance(v, tf.distribute.DistributedValues) else v)
        if axis is not None and getattr(getattr(local, "shape", None), "rank", None) == 0:
            axis = None
        return whole(reduce_op, v, axis=axis)

    def reduce(reduce_op: object, value: object, axis: object = None) -> object:
        return tf.nest.map_structure(lambda v: one(reduce_op, v, axis), value)

    strategy.reduce = reduce  # type: ignore[method-assign]


def make_strategy(name: str, reporter: Reporter = SILENT) -> tuple[tf.distribute.Strategy, str]:
    """Resolve --strategy to a tf.distribute strategy and a description for leuko.json.

    auto: mirrored over all GPUs when there are several, else the default strategy.
    mirrored: over the visible GPUs, or over the logical CPU devices when several are
    configured (tf.config.set_logical_device_configuration), else over the one device.
    multiworker: MultiWorkerMirroredStrategy across machines described by TF_CONFIG (the
    same command on every worker); without TF_CONFIG it trains as a single worker.
    """
    key = choose(name or "auto", STRATEGIES, "strategy")
    if key == "multiworker":
        # Before anything else touches the devices: collective ops are configured at start.
        mw = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=worker_timeout()
            )
        )
        _reduce_leaf_by_leaf(mw)
        resolver = mw.cluster_resolver
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        workers = sum(len(v) for v in spec.values()) or 1
        task = f"{resolver.task_type}:{resolver.task_id}" if resolver and spec else "single"
        return mw, (
            f"multi-worker mirrored ({workers} worker(s), this is {task}; "
            f"{mw.num_replicas_in_sync} replica(s))"
        )
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if key == "auto":
        key = "mirrored" if len(gpus) > 1 else "default"
    if key == "default":
        return tf.distribute.get_strategy(), "default"
    devices = gpus if gpus else cpus
    if len(devices) < 2:
        one = devices[0] if devices else "cpu"
        reporter.warn(spoken(reporter, f"{opt('strategy', 'mirrored')} with one device ({one})"))
    strategy = tf.distribute.MirroredStrategy(devices=devices or None)
    n = strategy.num_replicas_in_sync
    return strategy, f"mirrored over {n} device(s): {', '.join(devices)}"
