"""The interference lab: cross-objective interference and its mitigation on a laptop CPU, in minutes.

A ~0.8 M-parameter Qwen2 with a digit-level tokenizer is warm-started on synthetic arithmetic answered in a *mix of
styles* (step-by-step, short, wrong, unboxed, compact-and-clear, ...), so every objective starts with variance. Then
the same MOGRPOTrainer the GPU recipes use trains it with each weighting on accuracy, conciseness and clarity, and the
per-objective sampled evaluation, the covariance diagnostics and the Pareto report show which objectives moved.
Design and results: ``docs/lab.md``. Entry point: ``python -m mo_align.lab`` (``make lab``,
``make lab-quick`` / ``make demo``).
"""
