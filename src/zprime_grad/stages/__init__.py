"""Orchestration on top of the libraries: the Session (`zprime_grad.stages.session`: the one cluster
connection and chunk source of a run) and ``zprime-grad run`` (`zprime_grad.stages.run`). Nothing is
imported here, so that the command line starts fast."""
