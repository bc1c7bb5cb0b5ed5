"""Position methods: one small module per file, looked up by name in METHODS.

Adding a method = a new file with a PositionMethod subclass, one line here, and its test. A
temperature (a factor on the logits that composes with any method, --pos rotary+ssmax) likewise:
a Temperature subclass and a line in TEMPERATURES."""

from .alibi import AlibiPosition, alibi_slopes
from .base import PositionMethod, position_distance, relative_distance, sinusoid_table
from .cope import CopePosition
from .drope import DropePosition
from .fire import FirePosition
from .fox import FoxPosition
from .hybrid import IropePosition, RnopeSwaPosition
from .ids import (
    POSITION_SEED_OFFSET,
    PoseDraw,
    PositionDraw,
    Positions,
    pose_positions,
    random_positions,
    training_draw,
)
from .kerple import KerplePosition
from .learned import LearnedPosition
from .llama4_temperature import Llama4Temperature
from .local import LocalMask
from .none import NoPosition
from .p_rope import PartialRotaryPosition
from .resonance import ResonanceRotaryPosition
from .rotary import RotaryPosition
from .sandwich import SandwichPosition
from .scaled_sinusoidal import ScaledSinusoidalPosition
from .sinusoidal import SinusoidalPosition
from .ssmax import ScalableSoftmax
from .stick_breaking import StickBreaking
from .t5 import T5Position, t5_relative_bucket
from .temperature import Temperature
from .xpos import XposPosition

METHODS: dict[str, type[PositionMethod]] = {
    "none": NoPosition,
    "learned": LearnedPosition,
    "sinusoidal": SinusoidalPosition,
    "scaled-sinusoidal": ScaledSinusoidalPosition,
    "rotary": RotaryPosition,
    "alibi": AlibiPosition,
    "t5": T5Position,
    "xpos": XposPosition,
    "kerple": KerplePosition,
    "fire": FirePosition,
    "p-rope": PartialRotaryPosition,
    "fox": FoxPosition,
    "drope": DropePosition,
    "rnope-swa": RnopeSwaPosition,
    "irope": IropePosition,
    "sandwich": SandwichPosition,
    "resonance": ResonanceRotaryPosition,
    "cope": CopePosition,
    "stick-breaking": StickBreaking,
}
TEMPERATURES: dict[str, type[Temperature]] = {
    "ssmax": ScalableSoftmax,
    "llama4": Llama4Temperature,
}
# what `posbench compare` trains by default: the methods of the papers posbench reproduces
SEED_METHODS = ("none", "learned", "sinusoidal", "scaled-sinusoidal", "rotary", "alibi", "t5")

__all__ = [
    "METHODS",
    "TEMPERATURES",
    "LocalMask",
    "Temperature",
    "SEED_METHODS",
    "PositionMethod",
    "Positions",
    "POSITION_SEED_OFFSET",
    "PositionDraw",
    "PoseDraw",
    "pose_positions",
    "training_draw",
    "random_positions",
    "position_distance",
    "alibi_slopes",
    "t5_relative_bucket",
    "relative_distance",
    "sinusoid_table",
]
