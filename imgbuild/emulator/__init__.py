"""A DashScope-compatible text-to-image emulator (aiohttp), for offline development and tests.

Serves the three generation endpoints, task polling/cancel and expiring result URLs with the
response shapes of ../shared/dashscope-api.md §5, plus fault injection (see `faults`) and
billing/stats at /__emulator__/stats.

    from imgbuild.emulator import Emulator, EmulatorConfig
    with Emulator(EmulatorConfig(task_duration=0.2)) as emu:
        ...  # point a client at emu.base_url, then inspect emu.billed / emu.requests
"""

from __future__ import annotations

from .faults import EmulatorConfig
from .runner import Emulator, serve

__all__ = ["Emulator", "EmulatorConfig", "serve"]
