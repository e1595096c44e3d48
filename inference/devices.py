"""What OpenVINO can run on here, by name and full name, for settings and the self-test."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import openvino as ov

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    name: str        # "CPU", "GPU", "GPU.1", "NPU"
    full_name: str   # e.g. "Intel(R) Core(TM) i5-1135G7 @ 2.40GHz"


def available_devices(core: ov.Core) -> list[DeviceInfo]:
    devices: list[DeviceInfo] = []
    for name in core.available_devices:
        try:
            full = str(core.get_property(name, "FULL_DEVICE_NAME"))
        except Exception as exc:  # a half-installed driver must not hide the other devices
            log.warning("device %s: cannot read its name (%s)", name, exc)
            full = name
        devices.append(DeviceInfo(name=name, full_name=full))
    return devices


def device_choices(core: ov.Core) -> list[str]:
    """Values a user may pick per model: AUTO plus every device found."""
    return ["AUTO", *[d.name for d in available_devices(core)]]
