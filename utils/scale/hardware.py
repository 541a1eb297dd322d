"""A GPU and its links as data: peak throughput, SMs, memory, NVLink and InfiniBand bandwidth.

The numbers come from ``data/scale_hardware.csv``, one row per field with its source (NVIDIA's H100/H800
datasheet, the DeepSeek-V3 report Sec. 3.1 and 3.2.2). `Hardware.throughput` turns a peak into the FLOP/s a
chunk actually gets: peak x achieved efficiency x the share of SMs left to compute. The efficiency is an
assumption (the report does not state it); it lives in the training setting so the learner can move it.
Ground module: no imports of the kit beyond the scale package's checks.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from functools import cache

from utils.scale.config import DATA, check_count, check_number, known_changes

HARDWARE_CSV = DATA / "scale_hardware.csv"
DTYPES = ("fp8", "bf16")


@dataclass(frozen=True)
class Hardware:
    """One GPU model in one cluster. Bandwidths are per GPU and per direction, in GB/s (10^9 bytes/s)."""

    name: str
    peak_bf16_tflops: float
    peak_fp8_tflops: float
    n_sms: int
    comm_sms: int
    memory_gb: float
    nvlink_gbps: float
    ib_gbps: float
    gpus_per_node: int

    def __post_init__(self):
        for name, meaning in (
            ("peak_bf16_tflops", "the dense BF16 peak throughput in TFLOPS"),
            ("peak_fp8_tflops", "the dense FP8 peak throughput in TFLOPS"),
            ("memory_gb", "the GPU memory in GB"),
            ("nvlink_gbps", "the NVLink bandwidth per GPU in GB/s"),
            ("ib_gbps", "the InfiniBand bandwidth per GPU in GB/s"),
        ):
            object.__setattr__(self, name, check_number(name, getattr(self, name), meaning))
        object.__setattr__(self, "n_sms", check_count("n_sms", self.n_sms, 1, "the number of SMs of the GPU"))
        object.__setattr__(
            self,
            "comm_sms",
            check_count("comm_sms", self.comm_sms, 0, "the number of SMs reserved for communication"),
        )
        object.__setattr__(
            self, "gpus_per_node", check_count("gpus_per_node", self.gpus_per_node, 1, "GPUs per node")
        )
        if self.comm_sms >= self.n_sms:
            raise ValueError(
                f"comm_sms = {self.comm_sms} leaves no SM of the {self.n_sms} to compute: the all-to-all "
                f"kernels need fewer SMs than the GPU has."
            )

    def peak_tflops(self, dtype: str) -> float:
        """Dense peak of the tensor cores in `dtype` ('fp8' or 'bf16'), TFLOPS."""
        if dtype not in DTYPES:
            raise ValueError(f"GEMM precision must be one of {', '.join(DTYPES)}; got {dtype!r}.")
        return self.peak_fp8_tflops if dtype == "fp8" else self.peak_bf16_tflops

    def compute_sms(self, overlap: bool) -> int:
        """SMs left to compute: all of them, or all but `comm_sms` while communication runs alongside.

        DualPipe's overlapped chunks give 20 of 132 SMs to the all-to-all kernels (report Sec. 3.2.2); a
        schedule that waits for the all-to-all instead can compute on every SM.
        """
        return self.n_sms - self.comm_sms if overlap else self.n_sms

    def throughput(self, dtype: str, efficiency: float, overlap: bool) -> float:
        """FLOP/s achieved: peak in `dtype` x `efficiency` x compute SMs / all SMs."""
        efficiency = check_number("efficiency", efficiency, "the achieved fraction of peak", at_most=1.0)
        return self.peak_tflops(dtype) * 1e12 * efficiency * self.compute_sms(overlap) / self.n_sms

    def with_changes(self, **changes) -> Hardware:
        """A copy with some fields replaced (validated again): ``h800.with_changes(ib_gbps=25)``."""
        return replace(self, **known_changes(self, changes, "Hardware"))


@cache
def _rows() -> tuple[dict, ...]:
    with open(HARDWARE_CSV, newline="") as f:
        return tuple(csv.DictReader(f))


HARDWARE_NAMES = tuple(dict.fromkeys(row["hardware"] for row in _rows()))


def load_hardware(name: str = "H800") -> Hardware:
    """The GPU `name` as listed in ``data/scale_hardware.csv`` (one row per field, each with its source)."""
    rows = [row for row in _rows() if row["hardware"] == name]
    if not rows:
        raise ValueError(f"Unknown hardware {name!r}: data/scale_hardware.csv lists {', '.join(HARDWARE_NAMES)}.")
    values = {row["field"]: float(row["value"]) for row in rows}
    for count in ("n_sms", "comm_sms", "gpus_per_node"):
        values[count] = int(values[count])
    return Hardware(name=name, **values)


def hardware_sources(name: str = "H800") -> dict[str, str]:
    """Per field of hardware `name`, the source the CSV cites."""
    return {row["field"]: row["source"] for row in _rows() if row["hardware"] == name}
