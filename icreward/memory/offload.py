"""CPU offload of frozen encoders during training.

The sampling trainers (reward feedback, GRPO) encode each batch's prompts and reference images every step, so the
text / image encoders normally stay on the training device for the whole run (Wan's UMT5-XXL alone is 10.6 GiB in
bf16). :class:`EncoderOffload` keeps them in CPU memory instead: a forward pre-hook moves the encoder and its tensor
inputs to the device, and a forward hook moves the encoder back once the call returns, so the encoder occupies the
device only while it encodes, when nothing of the training step is alive yet. The cost is one host-to-device copy
of the encoder's weights per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["EncoderOffload"]


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


class EncoderOffload:
    """Keep ``modules`` (frozen encoders) in CPU memory and on ``device`` only during their own forward calls.

    Their tensor inputs are moved to ``device`` as well, so callers that build inputs on the encoder's (CPU) device
    keep working; outputs stay on ``device``. Encoders must be frozen: the weights leave the device right after the
    call, so no backward may go through them (the trainers encode under ``torch.no_grad()``).

    Args:
        modules: the encoders by name (not the VAE, whose decode is differentiated in reward feedback).
        device: the training device.
    """

    def __init__(self, modules: Mapping[str, nn.Module], device: torch.device | str):
        self.device = torch.device(device)
        self.modules = dict(modules)
        self._handles = []
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                raise ValueError(f"cannot offload {name!r}: it has trainable parameters")
            module.to("cpu")
            self._handles.append(module.register_forward_pre_hook(self._bring_in, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._send_back))

    def _bring_in(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        module.to(self.device)
        return _to(args, self.device), _to(kwargs, self.device)

    def _send_back(self, module: nn.Module, args: tuple, output: Any) -> None:
        module.to("cpu")

    def remove(self) -> None:
        """Remove the hooks (the encoders stay where they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
