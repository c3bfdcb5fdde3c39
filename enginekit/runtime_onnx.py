"""ONNX Runtime (CPU) engine: the default backend and the one every machine can run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enginekit.bundle import Manifest
from enginekit.runtime import IncompatibleBundleError
from enginekit.tokenization import EncodedBatch, TextEncoder

EXECUTION_PROVIDER = "CPUExecutionProvider"

PRECISE_INT8 = ("session.x64quantprecision", "1")
"""ONNX Runtime's own switch for x86 CPUs without VNNI (AVX2, AVX-512F): their fast U8S8 INT8 GEMM sums
pairs of products in 16 bits and saturates; with it, ONNX Runtime rewrites the weights to U8U8 at load
and the GEMMs are exact. Measured on an AVX2-only AMD EPYC (BENCHMARKS.md section 5): without it the
engine agreed with the exact INT8 arithmetic on 94.8% of a test split's labels (logits off by up to 2.3),
with it on 99.8% (0.57), for ~18% more time. CPUs with VNNI or AMX are not affected (ONNX Runtime applies
the rewrite only where the overflow exists), so every engine session sets it. Set at load time only: an
engine file written with it would carry U8 weights onto machines that do not need them."""


def precise_int8(options: object) -> None:
    """Add ``PRECISE_INT8`` to an ``onnxruntime.SessionOptions``."""
    options.add_session_config_entry(*PRECISE_INT8)  # type: ignore[attr-defined]


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


def check_compatible(manifest: Manifest, installed_version: str) -> None:
    """An offline-optimized ORT graph may use contrib ops/fusions of the ORT release that wrote it."""
    runtime = manifest.runtime
    if runtime.backend != "onnxruntime" or runtime.onnxruntime_version is None:
        raise IncompatibleBundleError(f"bundle {manifest.model_name} is not an ONNX Runtime bundle")
    if _major_minor(runtime.onnxruntime_version) != _major_minor(installed_version):
        raise IncompatibleBundleError(
            f"bundle {manifest.model_name} was built with onnxruntime {runtime.onnxruntime_version}, this "
            f"machine has {installed_version}; install onnxruntime=={runtime.onnxruntime_version} or rebuild "
            "the engine from the bundle's portable QDQ ONNX"
        )


_shared_pool_threads: int | None = None
_spinning: bool | None = None


def set_intra_op_spinning(allow: bool | None) -> None:
    """How the intra-op threads of engines created from now on wait for work (per-session pools only: the
    process-wide pool of ``share_thread_pool`` always spins, and Python cannot change it).

    None: ONNX Runtime's default: they spin, also between runs. True: they spin inside a run and stop when
    it returns (``session.force_spinning_stop``). False: they never spin.

    Spinning between runs holds the cores: at an 80% duty cycle on a 2-core machine a two-threaded engine
    kept 1.8 cores busy, so work at a lower priority (staging the next version) got no core in the gaps
    between batches; spinning inside runs only used 1.5-1.6 cores at the same speed, never spinning cost
    ~0.9 ms per single-row batch (``bench.serve_threads``, BENCHMARKS.md section 7)."""
    global _spinning
    _spinning = allow


def share_thread_pool(threads: int) -> bool:
    """Run every ONNX Runtime engine created from now on in this process on one intra-op thread pool.

    A server that swaps engines otherwise starts a new pool per engine: while the next engine warms up
    and replays its canaries, two pools of spinning threads fight over the same cores as the one serving.
    With one pool, the new engine's work queues behind and between the serving engine's batches. ONNX
    Runtime creates the global pool once per process, before the first session; returns False (and
    changes nothing) if a pool of another size or per-session pools were already chosen.
    """
    global _shared_pool_threads
    if _shared_pool_threads is not None:
        return _shared_pool_threads == threads
    import onnxruntime as ort

    try:
        ort.set_global_thread_pool_sizes(threads, 1)
    except Exception:  # the ORT environment exists already (a session was created first)
        return False
    _shared_pool_threads = threads
    return True


class OnnxRuntimeEngine:
    def __init__(self, bundle_dir: Path, manifest: Manifest, *, threads: int = 0) -> None:
        import onnxruntime as ort

        check_compatible(manifest, ort.__version__)
        if EXECUTION_PROVIDER not in ort.get_available_providers():
            raise IncompatibleBundleError(f"onnxruntime here lacks {EXECUTION_PROVIDER}")
        self.manifest = manifest
        self.encoder = TextEncoder(bundle_dir / manifest.tokenizer.directory, manifest.tokenizer.max_length)
        options = ort.SessionOptions()
        # The engine file is already optimized offline; load-time passes add only machine-local ones.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        precise_int8(options)
        if _shared_pool_threads is not None:
            options.use_per_session_threads = False  # the process's pool (``share_thread_pool``)
        else:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            if _spinning is not None:
                options.add_session_config_entry("session.intra_op.allow_spinning", "1" if _spinning else "0")
                if _spinning:
                    options.add_session_config_entry("session.force_spinning_stop", "1")
        self._session = ort.InferenceSession(
            str(bundle_dir / manifest.engine_file), options, providers=[EXECUTION_PROVIDER]
        )
        self._output = manifest.outputs[0].name

    def run(self, batch: EncodedBatch) -> np.ndarray:
        if len(batch) > self.manifest.max_batch_size:
            raise ValueError(
                f"batch of {len(batch)} exceeds the bundle's max_batch_size {self.manifest.max_batch_size}"
            )
        return self._session.run([self._output], batch.as_feed())[0]
