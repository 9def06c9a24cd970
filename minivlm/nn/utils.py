"""torch.nn.utils's gradient clipping (minivlm.optim holds it; torch code finds it here)."""
from ..optim import clip_grad_norm_

__all__ = ["clip_grad_norm_"]
