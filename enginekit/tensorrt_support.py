"""The TensorRT backend's pure parts: optimization profiles, engine metadata, compatibility checks.

No TensorRT import here: the builder (``tasks/tensorrt_build.py``) and the runtime
(``enginekit/runtime_tensorrt.py``) need TensorRT and a CUDA GPU; these rules are unit-tested anywhere.

A serialized TensorRT engine is specific to the TensorRT version that built it and to the GPU
(architecture and, for tuned tactics, the model): the manifest records both, with every optimization
profile, and a runtime refuses an engine built elsewhere instead of failing inside TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from enginekit.bundle import Manifest, RuntimeRequirements


class TensorRTProfile(BaseModel):
    """One optimization profile: the batch x sequence range a TensorRT engine is tuned for (opt = the
    shape its kernels are timed at)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_batch: int = Field(default=1, gt=0)
    opt_batch: int = Field(gt=0)
    max_batch: int = Field(gt=0)
    min_seq: int = Field(default=1, gt=0)
    opt_seq: int = Field(gt=0)
    max_seq: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TensorRTProfile:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if not self.min_seq <= self.opt_seq <= self.max_seq:
            raise ValueError(f"need min_seq <= opt_seq <= max_seq, got {self.min_seq}/{self.opt_seq}/{self.max_seq}")
        return self


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str
    """``major.minor``, e.g. ``9.0`` for Hopper."""


def profile_shapes(
    profile: TensorRTProfile, input_names: Sequence[str]
) -> dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """(min, opt, max) shape of every (batch, sequence) input for ``IOptimizationProfile.set_shape``."""
    shapes = (
        (profile.min_batch, profile.min_seq),
        (profile.opt_batch, profile.opt_seq),
        (profile.max_batch, profile.max_seq),
    )
    return {name: shapes for name in input_names}


def check_profiles(profiles: Sequence[TensorRTProfile], max_batch: int, max_seq: int) -> None:
    """Every profile inside the bundle's limits, and one covering the limits themselves."""
    if not profiles:
        raise ProfileError("engine.tensorrt.profiles is empty: a TensorRT engine needs at least one profile")
    for index, profile in enumerate(profiles):
        if profile.max_batch > max_batch or profile.max_seq > max_seq:
            raise ProfileError(
                f"engine.tensorrt.profiles[{index}] reaches batch {profile.max_batch} x sequence "
                f"{profile.max_seq}, beyond the bundle's max_batch_size {max_batch} x max_seq_length {max_seq}"
            )
    if not any(p.max_batch >= max_batch and p.max_seq >= max_seq and p.min_batch == 1 for p in profiles):
        raise ProfileError(
            f"no engine.tensorrt.profiles entry covers batch 1..{max_batch} x sequence up to {max_seq} (the "
            "bundle's limits): add one with min_batch 1, max_batch >= max_batch_size, max_seq >= max_seq_length"
        )


def select_profile(profiles: Sequence[TensorRTProfile], batch: int, sequence: int) -> int:
    """Index of the profile for a (batch, sequence) input: the smallest one covering it (short online
    queries get the profile tuned for them), the first on ties."""
    covering = [
        (p.max_batch * p.max_seq, index)
        for index, p in enumerate(profiles)
        if p.min_batch <= batch <= p.max_batch and p.min_seq <= sequence <= p.max_seq
    ]
    if not covering:
        raise ProfileError(f"no optimization profile covers batch {batch} x sequence {sequence}")
    return min(covering)[1]


def runtime_requirements(
    tensorrt_version: str, gpu: GpuIdentity, profiles: Sequence[TensorRTProfile], fp16: bool
) -> RuntimeRequirements:
    return RuntimeRequirements(
        backend="tensorrt",
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        tensorrt_profiles=[p.model_dump() for p in profiles],
        tensorrt_fp16=fp16,
    )


def _release(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:3])


def check_compatible(manifest: Manifest, tensorrt_version: str, gpu: GpuIdentity) -> None:
    """Refuse, with the reason and the way out, an engine this machine cannot run as built."""
    runtime = manifest.runtime
    if runtime.backend != "tensorrt" or runtime.tensorrt_version is None:
        raise_incompatible(f"bundle {manifest.model_name} is not a TensorRT bundle (backend {runtime.backend!r})")
    rebuild = "rebuild the engine here from the bundle's portable QDQ ONNX (engine.backend: tensorrt)"
    if _release(str(runtime.tensorrt_version)) != _release(tensorrt_version):
        raise_incompatible(
            f"bundle {manifest.model_name} was built with TensorRT {runtime.tensorrt_version}, this machine has "
            f"{tensorrt_version}; TensorRT engines only load on the release that built them: install "
            f"tensorrt=={runtime.tensorrt_version} or {rebuild}"
        )
    if runtime.compute_capability != gpu.compute_capability or runtime.gpu_name != gpu.name:
        raise_incompatible(
            f"bundle {manifest.model_name} was built for {runtime.gpu_name} (compute capability "
            f"{runtime.compute_capability}), this machine has {gpu.name} ({gpu.compute_capability}); engines "
            f"are tuned for the GPU that built them: {rebuild}"
        )


def raise_incompatible(message: str) -> None:
    from enginekit.runtime import IncompatibleBundleError

    raise IncompatibleBundleError(message)


def profiles_of(manifest: Manifest) -> list[TensorRTProfile]:
    return [TensorRTProfile.model_validate(p) for p in manifest.runtime.tensorrt_profiles or []]
