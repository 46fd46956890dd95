"""What every stage but download does first: the validated params and the task they name."""
from lmtune import params, tasks


def begin(tune_allocator: bool = False):
    """(params, task). tune_allocator: large per-step tensors ahead (a model's forward passes), so the CPU
    allocator reuses memory instead of page-faulting it in (lmtune.allocator); do it before torch allocates."""
    if tune_allocator:
        from lmtune import allocator  # imported where used: stages without a model do not depend on it

        allocator.tune_cpu_allocator()
    return tasks.load_params()
