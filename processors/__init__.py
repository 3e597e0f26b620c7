"""Analysis plug-ins: coffea processors registered in the ``zprime_grad.processors`` entry-point group."""
