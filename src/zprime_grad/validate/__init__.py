"""Validation with the standard tools: hard cuts at θ* and θ₀ on the held-out events → hist → cabinetry → pyhf."""

from zprime_grad.validate.driver import validate

__all__ = ["validate"]
