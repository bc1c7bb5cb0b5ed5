"""posbench: which position encoding, and does it extrapolate?"""

__version__ = "0.4.2"

from .model.gpt import GPT  # noqa: E402
from .runs.config import ModelConfig  # noqa: E402
from .runs.folder import load_run  # noqa: E402

__all__ = ["GPT", "ModelConfig", "load_run", "__version__"]
