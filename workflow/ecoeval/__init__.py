"""ecoeval: pretrain and finetune transformer LMs and measure energy, carbon, cost and fairness."""

__version__ = "0.1.0"


class EcoevalError(Exception):
    """A user-facing error: one line naming the field, file or value and what was expected."""
