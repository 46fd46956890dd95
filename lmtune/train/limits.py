"""Training memory, what this process may use at its peak.

On CPU the smaller of the RAM the kernel reports available (MemAvailable) and
the room left under every memory cgroup limit above this process (v2 `memory.max`, v1
`memory.limit_in_bytes`; containers report the host's RAM through the usual APIs), each plus what the
process already holds; shared between the processes `accelerate launch` starts on one machine. On CUDA
the free device memory. `LMTUNE_MEMORY_LIMIT_MB` replaces the measured figure for each training process
(constrained environments the detection misses, tests; a huge value turns the check off).
"""
import os
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import UserError

MB = 2**20
GB = 2**30
LIMIT_ENV = "LMTUNE_MEMORY_LIMIT_MB"
UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a huge number (2^63 rounded down to a page)


def gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.0f} MB"


def _proc_status_kb(field: str, status: Path = Path("/proc/self/status")) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    return _proc_status_kb("VmRSS") or 0


def peak_rss() -> int:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss is carried over from
    the forking parent on Linux (a dvc process that forked us would report its own peak)."""
    value = _proc_status_kb("VmHWM")
    if value is None:
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return value


def mem_available(meminfo: str) -> int | None:
    """MemAvailable (the kernel's estimate of what can be allocated without swapping) from /proc/meminfo."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_rooms(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """Bytes left under each memory limit that applies to this process: the limit minus what its group
    already holds (usage minus reclaimable inactive page cache, as container runtimes count it).

    proc_cgroup is /proc/self/cgroup's text; each limited cgroup from the process's own up to the root
    counts (a parent's limit applies to its children too). v2: memory.max / memory.current; v1:
    memory.limit_in_bytes / memory.usage_in_bytes. In a container with its own cgroup namespace the
    process's group is the mount's root.
    """
    rooms = []
    for line in proc_cgroup.splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            names = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            mount = root / "memory"
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        group = mount / rel.strip("/")
        if not group.is_dir():
            group = mount
        while True:
            limit = _read_int(group / names[0])
            if limit is not None and limit < UNLIMITED:
                usage = _read_int(group / names[1]) or 0
                rooms.append(max(0, limit - max(0, usage - _stat(group / "memory.stat", names[2]))))
            if group == mount or mount not in group.parents:
                break
            group = group.parent
    return rooms


def cpu_limit(own_rss: int, available: int | None, rooms: list[int], local_processes: int = 1) -> int | None:
    """The peak this process may reach: what it holds now plus its share of the smaller of the free RAM
    and every cgroup's room (processes on one machine share them)."""
    candidates = [x for x in [available, *rooms] if x is not None]
    if not candidates:
        return None
    return own_rss + min(candidates) // max(1, local_processes)


@dataclass(frozen=True)
class Limit:
    bytes: int | None
    source: str  # how it was found, for the message


def limit_override(environ=os.environ) -> int | None:
    value = environ.get(LIMIT_ENV)
    if value is None or value.strip() == "":
        return None
    try:
        mb = float(value)
    except ValueError:
        raise UserError(f"{LIMIT_ENV}: expected a number of MB, got {value!r}") from None
    if mb <= 0:
        raise UserError(f"{LIMIT_ENV}: must be > 0 MB, got {value!r}")
    return int(mb * MB)


def process_limit(device: str, environ=os.environ) -> Limit:
    """What this process may use at its peak: LMTUNE_MEMORY_LIMIT_MB, else measured (see the module doc)."""
    override = limit_override(environ)
    if override is not None:
        return Limit(override, f"set by {LIMIT_ENV}")
    if device == "cuda":
        import torch

        gpu = int(environ.get("LOCAL_RANK", "0") or 0)  # accelerate selects this process's GPU only later
        free, _ = torch.cuda.mem_get_info(gpu)
        return Limit(free + torch.cuda.memory_reserved(gpu), "free GPU memory")
    try:
        available = mem_available(Path("/proc/meminfo").read_text())
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        available, proc_cgroup = None, ""
    if available is None:
        try:
            import psutil

            available = psutil.virtual_memory().available
        except ImportError:
            pass
    rooms = cgroup_rooms(proc_cgroup)
    local = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    source = ("the smaller of available RAM and the cgroup limit" if rooms else "available RAM") + (
        f", shared by {local} processes" if local > 1 else "")
    return Limit(cpu_limit(rss(), available, rooms, local), source)
