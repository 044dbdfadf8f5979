"""The search: spaces, data and training, trial evaluation, the study, samplers, the searcher and the
scheduler, and the multi-objective maths. Submodules import what they need; this package imports nothing."""
