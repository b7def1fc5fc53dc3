"""Rotation: policy (periods, due dates), the four-step protocol, rotators, events."""

from keysafe.rotation.engine import Outcome, RotationEngine
from keysafe.rotation.policy import Policy, RotationState
from keysafe.rotation.rotators import (
    ManualRotation,
    RotationContext,
    Rotator,
    load_rotator,
    sign,
    verify_signature,
)

__all__ = ["ManualRotation", "Outcome", "Policy", "RotationContext", "RotationEngine",
           "RotationState", "Rotator", "load_rotator", "sign", "verify_signature"]
