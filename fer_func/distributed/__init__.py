"""Beyond one device: a run's populations as Ray tasks (``--ray``), see docs/distributed.md."""
