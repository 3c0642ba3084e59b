"""Errors raised by p3dlab. Every p3dlab-specific failure derives from :class:`P3DLabError`."""


class P3DLabError(Exception):
    """Base class of p3dlab's own errors."""


class P3DLabValueError(P3DLabError, ValueError):
    """Invalid argument values (shapes, dtypes, ranges). Also a ``ValueError``."""
