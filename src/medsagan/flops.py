"""FLOPs counted by operator: the formulas of torch.utils.flop_counter, applied as operators run.

Convolutions, matmuls and their backwards (a double backward included) have formulas; everything else
(norms, activations) counts zero and is a few percent of a convolutional network's work.
"""

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class FlopCounter(TorchDispatchMode):
    """Counts the FLOPs of every operator that torch.utils.flop_counter has a formula for.

    FlopCounterMode itself cannot be used: its module tracker fails inside the penalty's autograd.grad.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
