"""TensorRT (CUDA) engine runtime behind the one ``EngineRuntime`` interface.

Refuses, before deserializing, an engine built with another TensorRT release or for another GPU
(``enginekit.tensorrt_support.check_compatible``). Each batch runs with the smallest optimization profile
that covers its shape; inputs and outputs live in torch CUDA tensors whose addresses TensorRT reads
(``set_tensor_address`` + ``execute_async_v3`` on torch's current stream).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enginekit.bundle import Manifest
from enginekit.runtime import IncompatibleBundleError
from enginekit.tensorrt_support import GpuIdentity, check_compatible, profiles_of, select_profile
from enginekit.tokenization import EncodedBatch, TextEncoder

MISSING_TENSORRT = (
    "this bundle is a TensorRT engine: it needs the `tensorrt` Python package (pip install -e '.[gpu]', "
    "libraries from NVIDIA's index) and a CUDA GPU; importing tensorrt failed: {error}"
)


class TensorRTEngine:
    def __init__(self, bundle_dir: Path, manifest: Manifest) -> None:
        try:
            import tensorrt as trt
        except ImportError as error:
            raise IncompatibleBundleError(MISSING_TENSORRT.format(error=error)) from error
        import torch

        if not torch.cuda.is_available():
            raise IncompatibleBundleError("this bundle is a TensorRT engine and torch sees no CUDA GPU here")
        major, minor = torch.cuda.get_device_capability(0)
        check_compatible(manifest, trt.__version__, GpuIdentity(torch.cuda.get_device_name(0), f"{major}.{minor}"))
        self.manifest = manifest
        self.encoder = TextEncoder(bundle_dir / manifest.tokenizer.directory, manifest.tokenizer.max_length)
        self._profiles = profiles_of(manifest)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine((bundle_dir / manifest.engine_file).read_bytes())
        if engine is None:
            raise IncompatibleBundleError(f"{bundle_dir}: TensorRT could not deserialize {manifest.engine_file}")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._inputs = [spec.name for spec in manifest.inputs]
        self._output = manifest.outputs[0].name
        self._torch = torch
        self._profile: int | None = None

    def run(self, batch: EncodedBatch) -> np.ndarray:
        torch = self._torch
        size, sequence = batch.input_ids.shape
        if size > self.manifest.max_batch_size:
            raise ValueError(f"batch of {size} exceeds the bundle's max_batch_size {self.manifest.max_batch_size}")
        stream = torch.cuda.current_stream()
        profile = select_profile(self._profiles, size, sequence)
        if profile != self._profile:
            self._context.set_optimization_profile_async(profile, stream.cuda_stream)
            self._profile = profile
        feeds = batch.as_feed()
        keep = []
        for name in self._inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", non_blocking=True)
            keep.append(tensor)
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
        output = torch.empty((size, len(self.manifest.labels)), dtype=torch.float32, device="cuda")
        self._context.set_tensor_address(self._output, output.data_ptr())
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
        return output.cpu().numpy()
