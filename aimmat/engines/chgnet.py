"""CHGNet universal potential through its ASE calculator.

The weights ship inside the `chgnet` package: loading reads no network.
"""

from __future__ import annotations

import os
import warnings

from aimmat.engines.ase_engine import AseEngine


class ChgnetEngine(AseEngine):
    name = "chgnet"
    package = "chgnet"

    def __init__(self, model: str = "0.3.0"):
        self.model_version = model
        self._calc = None

    @classmethod
    def from_profile(cls, profile: dict) -> "ChgnetEngine":
        """The weights version named by the profile (default 0.3.0)."""
        return cls(profile.get("model") or "0.3.0")

    def calculator(self):
        if self._calc is None:
            import torch
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            # CHGNet converts a grad-carrying volume tensor on every call; the
            # warning says nothing about our inputs and floods the log.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
            threads = int(os.environ.get("AIMMAT_TORCH_THREADS", "0"))
            if threads > 0:
                torch.set_num_threads(threads)
            model = CHGNet.load(model_name=self.model_version, verbose=False)
            self._calc = CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="warn")
        return self._calc
