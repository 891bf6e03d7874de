# The task, term, uncertainty and backbone files register entries when imported. pytest's doctest collection would
# import them for every test session; the extending tests import them themselves, for their own run.
collect_ignore = ["contour_task.py", "margin_uncertainty.py", "sparsity_term.py", "tiny_backbone.py"]
