"""p3dlab benchmarks: ``make bench`` (``python -m benchmarks.run``)."""
