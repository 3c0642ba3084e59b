"""Run-time machinery under the operations: memory pools (``recycled``), huge pages
(``huge_pages``), the memory this process may still take (``memory_limit``), the refusal of an
operation whose estimated memory does not fit (``memory_budget``), the volume kernels' memory and
scheduling policy (``volume_scratch``), what a forked child may run (``fork_safety``) and how torch
and the kernels share the CPUs (``threads``, applied by ``import p3dlab``). Internal: nothing here is
differentiable or part of the public API; ``p3dlab.ops`` uses it."""

__all__ = []
