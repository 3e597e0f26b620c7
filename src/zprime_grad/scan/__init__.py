"""The black-box baseline: the gradient's cuts searched without gradients (Sobol points, Optuna's TPE) on
the same training events and in the hard-cut limit of the same objective, at the gradient run's budget.

`objective` evaluates candidate cuts; `search` proposes them; `driver` runs a method and writes its
``params.json`` (the optimiser's format, so ``validate`` checks it on the held-out events like θ*).
"""

from zprime_grad.scan.driver import METHODS, gradient_budget, scan

__all__ = ["METHODS", "gradient_budget", "scan"]
