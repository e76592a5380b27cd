"""`l4p run` over many inputs: job listing, the manifest, sharding across torchrun ranks, a worker pool.

Jobs. Every INPUT of `l4p run` is a path, a glob pattern (quoted, expanded here: `'clips/*.mp4'`,
`**` recursive) or `@list.txt` (one path or pattern per line, relative to the list file's folder;
blank lines and lines starting with `#` skipped). A path is a video file (one job), an image folder
(one job: a folder with no video file directly inside is one video of its images) or a folder of videos
(a folder with at least one video file directly inside: each video file is one job, anything else in
it is ignored). A file listed twice is run once. Job names (OUT/NAME/) are the file's stem or the image
folder's name and must be unique: two different inputs with one name are refused before anything runs
(an InputError naming both), never renamed silently, so OUT/NAME/ always says which input it came
from. Jobs are sorted by name.

Manifest. Each finished attempt appends one JSON line {input, output, status: "done"|"failed", seconds,
error, finished} to OUT/manifest.jsonl (under torchrun: OUT/manifest.rank{R}.jsonl, merged into
manifest.jsonl by rank 0 at the end). A line is one `write` on a file opened with O_APPEND, then
fsynced, so lines of several processes never interleave. A re-run into the same OUT skips the inputs
whose latest record (merged manifest and leftover rank parts together) is "done" and whose OUT/NAME/
is complete (has meta.json; folders are built hidden and renamed into place whole, see
`l4p_framework.io.atomic_folder`), and runs the rest again ("failed" ones, never-attempted ones, ones
whose folder is gone); `--overwrite` recomputes every job.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, L4PError

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif"}
MANIFEST = "manifest.jsonl"
TEST_KILL_AFTER = "L4P_TEST_KILL_AFTER"
"""Test hook: with this environment variable set to k, the job loop SIGKILLs its own process group (itself
and its workers; only when it leads its group, else just itself) once k attempts of this process have
finished: a deterministic stand-in for a run killed midway. Not for users."""


@dataclass(frozen=True)
class Job:
    """One video: `input` (a video file or image folder) written to OUT/`name`/."""

    input: Path
    name: str


# -- job listing ---------------------------------------------------------------------------------
def list_jobs(specs: Iterable[str]) -> list[Job]:
    """The jobs of `l4p run INPUT...`, sorted by name (module docstring: paths, globs, @lists)."""
    jobs: dict[str, Job] = {}
    for path in _expand_specs(specs, base=None):
        for job in _jobs_of(path):
            key = os.path.abspath(job.input)
            jobs.setdefault(key, job)  # one file named twice (a list and a glob) runs once
    by_name: dict[str, Job] = {}
    for job in jobs.values():
        if job.name in by_name:
            a, b = sorted([by_name[job.name].input, job.input])
            shown = (a.name, b.name) if a.parent == b.parent else (str(a), str(b))
            where = f" in {a.parent}" if a.parent == b.parent else ""
            raise InputError(
                f"{shown[0]} and {shown[1]}{where} would both write OUT/{job.name}/; rename one (job names "
                "are the file stem or image folder name and must be distinct) or run them separately"
            )
        by_name[job.name] = job
    return [by_name[name] for name in sorted(by_name)]


def _expand_specs(specs: Iterable[str], base: Path | None) -> list[Path]:
    paths: list[Path] = []
    for spec in specs:
        if spec.startswith("@") and base is None:
            paths += _expand_specs(_read_list(Path(spec[1:])), base=Path(spec[1:]).parent)
            continue
        text = str(base / spec) if base is not None and not os.path.isabs(spec) else spec
        if not os.path.lexists(text) and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"no file matches the pattern {spec!r}")
            paths += [Path(m) for m in matches]
        elif not os.path.exists(text):
            raise InputError(f"input {text} does not exist")
        else:
            paths.append(Path(text))
    return paths


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read input list @{path}: {exc.strerror or exc}") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise InputError(f"input list @{path} names no input (one path per line, # comments)")
    return entries


def _jobs_of(path: Path) -> list[Job]:
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if videos:
            return [Job(v, v.stem) for v in videos]
        return [Job(path, path.resolve().name or "frames")]
    return [Job(path, path.stem)]


def shard(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """Rank `rank`'s jobs of the sorted list: every job i with i % world == rank."""
    return [job for i, job in enumerate(jobs) if i % world == rank]


# -- manifest ------------------------------------------------------------------------------------
def manifest_path(out_root: Path, rank: int | None = None) -> Path:
    """OUT/manifest.jsonl, or rank R's own part OUT/manifest.rank{R}.jsonl."""
    return out_root / (MANIFEST if rank is None else f"manifest.rank{rank}.jsonl")


def record(job: Job, out_root: Path, status: str, seconds: float, error: str | None) -> dict:
    """A manifest line's content."""
    return {
        "input": os.path.abspath(job.input),
        "output": os.path.abspath(out_root / job.name),
        "status": status,
        "seconds": round(seconds, 3),
        "error": error,
        "finished": time.time(),
    }


def append_record(path: Path, entry: dict) -> None:
    """Append `entry` as one line: O_APPEND, a single write, fsync (lines of processes never interleave)."""
    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(out_root: Path) -> list[dict]:
    """Every record of OUT/manifest.jsonl and leftover OUT/manifest.rank*.jsonl, oldest first (a torn
    or foreign line is skipped)."""
    records = []
    for path in [manifest_path(out_root), *sorted(out_root.glob("manifest.rank*.jsonl"))]:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise L4PError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "input" in entry and "status" in entry:
                records.append(entry)
    records.sort(key=lambda e: e.get("finished", 0))  # stable: file order breaks ties
    return records


def is_complete(folder: Path) -> bool:
    """An OUT/NAME/ that a finished run renamed into place (it holds meta.json)."""
    return (folder / "meta.json").is_file()


def done_jobs(jobs: list[Job], out_root: Path) -> set[str]:
    """Names of the jobs whose latest record is "done" and whose OUT/NAME/ is complete."""
    latest = {e["input"]: e["status"] for e in read_records(out_root)}
    return {
        job.name
        for job in jobs
        if latest.get(os.path.abspath(job.input)) == "done" and is_complete(out_root / job.name)
    }


def merge_parts(out_root: Path) -> int:
    """Append the records of every OUT/manifest.rank*.jsonl to OUT/manifest.jsonl (by finish time) and
    delete the parts; the number of records merged."""
    parts = sorted(out_root.glob("manifest.rank*.jsonl"))
    entries = []
    for part in parts:
        for line in part.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    entries.sort(key=lambda e: e.get("finished", 0))
    target = manifest_path(out_root)
    for entry in entries:
        append_record(target, entry)
    for part in parts:
        part.unlink(missing_ok=True)
    return len(entries)


# -- torchrun ------------------------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) from torchrun's environment; (0, 1, 0) outside torchrun."""
    try:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise L4PError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


# -- running -------------------------------------------------------------------------------------
class Tally:
    """The overall progress line `k/n done, f failed` (stderr) and the test kill hook."""

    def __init__(self, total: int, prefix: str = ""):
        self.total, self.prefix, self.done, self.failed = total, prefix, 0, 0
        self.kill_after = int(os.environ.get(TEST_KILL_AFTER, "0") or 0)

    def add(self, entry: dict) -> None:
        import sys

        if entry["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
            print(f"{self.prefix}{entry['input']}: failed: {entry['error']}", file=sys.stderr)
        print(
            f"{self.prefix}{self.done}/{self.total} done, {self.failed} failed", file=sys.stderr, flush=True
        )
        if self.kill_after and self.done + self.failed >= self.kill_after:
            sys.stdout.flush()
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def run_pool(
    jobs: list[Job],
    workers: int,
    initializer: Callable,
    initargs: tuple,
    task: Callable[[Job], dict],
    on_result: Callable[[dict], None],
) -> None:
    """Run task(job) for every job in `workers` spawned processes, each set up once by
    initializer(*initargs) (load the model there); jobs are dealt as workers free up. A result with a
    "fatal" key (the worker could not start, e.g. a bad registry) stops the pool: L4PError."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )
    try:
        futures = [pool.submit(task, job) for job in jobs]
        for future in as_completed(futures):
            result = future.result()
            if "fatal" in result:
                raise L4PError(result["fatal"])
            on_result(result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def worker_threads(workers: int, local_world: int = 1) -> int:
    """torch threads per worker: the machine's cores shared out, at least 1."""
    return max(1, (os.cpu_count() or 1) // (workers * max(1, local_world)))
