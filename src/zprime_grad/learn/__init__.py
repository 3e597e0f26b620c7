"""Learned observables: a small MLP on skim columns, pre-trained where the chunks are, then used as a
soft/hard score cut and fine-tuned with the cut thresholds for the discovery significance.

Modules: ``mlp`` (the network: static `NetworkSpec` + parameter pytree, pure JAX), ``io`` (the
``.npz`` + JSON-header file format), ``train`` (class-balanced cross-entropy, per-chunk gradients
reduced over `zprime_grad.chunks`, Adam, early stopping), ``attach`` (score cuts in the configured
channels). The stages that use them are `zprime_grad.stages.learned` and ``zprime-grad train``.
"""
