"""Studies: experiments.toml loading, the CLI options, W&B tracking, the local report and checkpoints.

``run.py`` (the orchestration that trains populations) wires these pieces together; see docs/study.md.
"""
