"""The embedded default dataset: Pythia 8 + FastJet + a parametric detector, written as NanoAOD."""

from zprime_grad.generate.dataset import generate_dataset

__all__ = ["generate_dataset"]
