"""The mutation run: break the method's code on purpose, one curated mutant at a time, and check
that the tests meant to guard that code fail. Run on demand, not in CI:

    .venv/bin/python scripts/mutation_run.py                  # every mutant in mutants.txt
    .venv/bin/python scripts/mutation_run.py --only flow      # file or comment matches
    .venv/bin/python scripts/mutation_run.py --list           # check the list, run nothing

scripts/mutants.txt holds one mutant per line ('#' lines and blank lines are skipped):

    path/to/file.py | exact original substring | mutated substring | test ids  # comment

The original must occur exactly once in the file, else the mutant is broken. Test ids are
pytest node ids or files, space separated (shell quoting; pytest options such as -k EXPR may
follow them). A test file that does not exist is left out and said so; a mutant with no test
left, or whose selection runs nothing, SURVIVED.

The working tree is never touched: its files (git's tracked and untracked-but-not-ignored
ones) are copied to a temporary folder per job, each mutant is applied to the copy's file and
reverted after its run, and pytest runs in the copy with PYTHONPATH pointing at it, bytecode
writing off (no stale .pyc between mutants) and HF_HUB_OFFLINE=1. A small pytest plugin records
where every posecast module came from, and the run stops if one came from anywhere but the
copy (the package is also installed in editable mode, pointing at the working tree).

Before the mutants, each distinct test selection runs once on the unmutated copy: a mutant
whose tests already fail there is reported as "baseline" and not run (a failing test catches
nothing). Each mutant then runs `python -m pytest -x -q -p no:cacheprovider TESTS` under a
timeout (--timeout, else 5 x its baseline's time, at least 60 s) and gets one line:
caught, SURVIVED, broken, timeout or baseline, with its seconds. Exit status: 1 if any mutant
survived, else 2 if any was broken, timed out or had a failing baseline, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = Path(__file__).resolve().parent / "mutants.txt"
PACKAGE = "posecast"
OPTIONS_WITH_VALUE = {"-k", "-m", "-o", "--deselect"}
IGNORED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist",
           "wheels", "out", "runs"}

PROBE = '''\
"""Written by scripts/mutation_run.py: where each posecast module was imported from."""
import json
import os
import sys


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MUTATION_PROBE_OUT")
    if not path:
        return
    modules = {name: getattr(module, "__file__", None)
               for name, module in list(sys.modules.items())
               if name == "posecast" or name.startswith("posecast.")}
    with open(path, "w") as out:
        json.dump({"collected": session.testscollected, "modules": modules}, out)
'''


class ListError(Exception):
    """A line of mutants.txt that cannot be read."""


@dataclass(frozen=True)
class Mutant:
    line: int  # in mutants.txt
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    comment: str

    @property
    def module(self) -> str:
        parts = list(Path(self.path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    def describe(self) -> str:
        return f"{self.path}:L{self.line}" + (f"  {self.comment}" if self.comment else "")


@dataclass
class Selection:
    """A mutant's pytest arguments once missing test files are left out."""

    args: tuple[str, ...]
    missing: list[str] = field(default_factory=list)

    @property
    def runs_something(self) -> bool:
        return bool(_node_ids(self.args))


@dataclass
class Outcome:
    status: str  # caught | SURVIVED | broken | timeout | baseline
    seconds: float = 0.0
    note: str = ""
    output: str = ""


def parse_mutants(path: Path) -> list[Mutant]:
    mutants = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(" | ")
        if len(fields) != 4:
            raise ListError(f"{path.name}:{number}: expected 4 fields separated by ' | ', "
                            f"found {len(fields)}")
        file, original, mutated, rest = (part.strip() for part in fields)
        tests, _, comment = rest.partition("#")
        if not file or not original:
            raise ListError(f"{path.name}:{number}: the file and the original text are needed")
        if original == mutated:
            raise ListError(f"{path.name}:{number}: the mutant changes nothing")
        try:
            args = tuple(shlex.split(tests))
        except ValueError as error:
            raise ListError(f"{path.name}:{number}: test ids: {error}") from None
        mutants.append(Mutant(number, file, original, mutated, args, comment.strip()))
    return mutants


def _node_ids(args: tuple[str, ...]) -> list[str]:
    """The node ids and files among pytest arguments (not options or their values)."""
    ids, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            ids.append(arg)
    return ids


def select_tests(args: tuple[str, ...], root: Path) -> Selection:
    """The arguments without node ids whose test file does not exist under `root`."""
    node_ids = set(_node_ids(args))
    kept, missing = [], []
    for arg in args:
        if arg in node_ids and not (root / arg.split("::")[0]).exists():
            missing.append(arg.split("::")[0])
        else:
            kept.append(arg)
    return Selection(tuple(kept), sorted(set(missing)))


def check_occurrence(mutant: Mutant, root: Path) -> str | None:
    """Why the mutant cannot be applied to the tree at `root`, or None."""
    file = root / mutant.path
    if not file.is_file():
        return f"{mutant.path} does not exist"
    count = file.read_text().count(mutant.original)
    if count != 1:
        return f"the original text occurs {count} times in {mutant.path}, not once"
    return None


# ------------------------------------------------------------------------------ the copies


def tree_files(root: Path) -> list[Path]:
    """The working tree's files as git sees them (tracked, and untracked but not ignored)."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached",
                                 "--others", "--exclude-standard"], capture_output=True,
                                check=True).stdout.decode().split("\0")
        return sorted({Path(name) for name in listed if name and (root / name).is_file()})
    except (OSError, subprocess.CalledProcessError):
        files = []
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if path.is_file() and not IGNORED & set(relative.parts) and \
                    not any(part.endswith(".egg-info") for part in relative.parts):
                files.append(relative)
        return sorted(files)


def copy_tree(source: Path, files: list[Path], target: Path) -> None:
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


class Workspace:
    """One job's copy of the tree, where its mutants are applied and its tests run."""

    def __init__(self, base: Path, index: int, files: list[Path], source: Path,
                 python: str, probe_dir: Path) -> None:
        self.folder = base / f"job{index}"
        self.tree = self.folder / "tree"
        copy_tree(source, files, self.tree)
        self.python, self.probe_dir = python, probe_dir
        self.probe_out = self.folder / "probe.json"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(self.tree), str(self.probe_dir)]
        env["PYTHONPATH"] = os.pathsep.join(path + [p for p in [env.get("PYTHONPATH")] if p])
        env.update(HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
                   MUTATION_PROBE_OUT=str(self.probe_out))
        return env

    def pytest(self, args: tuple[str, ...], timeout: float, running: Runs) -> tuple[int | None,
                                                                                    str, dict]:
        """(exit status or None on timeout, output, probe record) of one pytest run."""
        self.probe_out.unlink(missing_ok=True)
        command = [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-p", "_mutation_probe", f"--basetemp={self.folder / 'pytest-tmp'}", *args]
        process = running.start(command, cwd=self.tree, env=self.environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        if process is None:  # the run is stopping
            return None, "", {}
        try:
            output, _ = process.communicate(timeout=timeout)
            status: int | None = process.returncode
        except subprocess.TimeoutExpired:
            kill_group(process)
            output, _ = process.communicate()
            status = None
        finally:
            running.forget(process)
        probe = {}
        with contextlib.suppress(OSError, ValueError):
            probe = json.loads(self.probe_out.read_text())
        return status, output, probe

    def foreign_modules(self, probe: dict) -> list[str]:
        """posecast modules the run imported from outside this copy."""
        tree = self.tree.resolve()
        foreign = []
        for name, file in probe.get("modules", {}).items():
            if file and tree not in Path(file).resolve().parents:
                foreign.append(f"{name} from {file}")
        return foreign


class Runs:
    """The pytest processes this script has running; `stop` ends them and starts no more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen] = set()
        self._stopped = False

    def start(self, command: list[str], **options) -> subprocess.Popen | None:
        with self._lock:
            if self._stopped:
                return None
            process = subprocess.Popen(command, **options)
            self._processes.add(process)
            return process

    def forget(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for process in self._processes:
                kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """End a pytest run this script started, with whatever it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines()[-lines:])


# ------------------------------------------------------------------------------- the run


class ForeignImport(Exception):
    pass


def classify(status: int | None, probe: dict, mutant: Mutant | None) -> tuple[str, str]:
    """(status word, note) of a pytest exit status."""
    if status is None:
        return "timeout", ""
    if status == 0:
        if mutant is not None and mutant.module not in probe.get("modules", {}):
            return "SURVIVED", f"the tests never imported {mutant.module}"
        return "SURVIVED", ""
    if status == 1:
        return "caught", ""
    if status == 2:
        return "caught", "collection error or interrupted"
    if status == 5:
        return "SURVIVED", "no test ran (selection is empty)"
    if status < 0:
        return "caught", f"pytest died of signal {-status}"
    return "broken", f"pytest exit status {status} (internal or usage error)"


def run_mutant(mutant: Mutant, selection: Selection, workspace: Workspace, timeout: float,
               running: Runs) -> Outcome:
    if not selection.runs_something:
        missing = ", ".join(selection.missing) or "none given"
        return Outcome("SURVIVED", note=f"no tests (missing: {missing})")
    file = workspace.tree / mutant.path
    problem = check_occurrence(mutant, workspace.tree)
    if problem:
        return Outcome("broken", note=problem)
    pristine = file.read_text()
    changed = pristine.replace(mutant.original, mutant.mutated, 1)
    try:
        compile(changed, str(file), "exec")
    except SyntaxError as error:
        return Outcome("broken", note=f"the mutated file does not compile: {error.msg} "
                                      f"(line {error.lineno})")
    started = time.perf_counter()
    try:
        file.write_text(changed)
        status, output, probe = workspace.pytest(selection.args, timeout, running)
    finally:
        file.write_text(pristine)
    seconds = time.perf_counter() - started
    foreign = workspace.foreign_modules(probe)
    if foreign:
        raise ForeignImport(", ".join(foreign[:3]))
    word, note = classify(status, probe, mutant)
    if selection.missing and word == "SURVIVED":
        note = "; ".join(filter(None, [note, f"missing: {', '.join(selection.missing)}"]))
    return Outcome(word, seconds, note, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=Path, default=MUTANTS, help="the list (mutants.txt)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="run the mutants whose file or comment matches (regex, any case)")
    parser.add_argument("--list", action="store_true",
                        help="list the mutants and check them against the tree; run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="pytest runs at a time (1)")
    parser.add_argument("--timeout", type=float,
                        help="seconds per mutant (default: 5 x its baseline, at least 60)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary copies and every run's output")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs pytest (default: this one)")
    options = parser.parse_args(argv)
    if options.jobs < 1:
        parser.error("--jobs must be at least 1")

    try:
        mutants = parse_mutants(options.mutants)
    except (OSError, ListError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options.only:
        try:
            pattern = re.compile(options.only, re.IGNORECASE)
        except re.error:
            pattern = re.compile(re.escape(options.only), re.IGNORECASE)
        mutants = [m for m in mutants if pattern.search(m.path) or pattern.search(m.comment)]
    if not mutants:
        print("no mutants selected", file=sys.stderr)
        return 2
    if options.list:
        return list_mutants(mutants)
    return run(mutants, options)


def list_mutants(mutants: list[Mutant]) -> int:
    problems = 0
    for index, mutant in enumerate(mutants, start=1):
        problem = check_occurrence(mutant, ROOT)
        selection = select_tests(mutant.tests, ROOT)
        problems += problem is not None
        print(f"[{index:>3}] {'BROKEN' if problem else 'ok':<6} {mutant.describe()}")
        print(f"      {mutant.original!r} -> {mutant.mutated!r}")
        print(f"      tests: {' '.join(mutant.tests) or '(none)'}")
        if problem:
            print(f"      broken: {problem}")
        if selection.missing:
            print(f"      missing test files: {', '.join(selection.missing)}")
        files_named = {arg.split("::")[0] for arg in _node_ids(mutant.tests)}
        if "-k" in mutant.tests and len(files_named) > 1:
            print("      note: -k filters every file named, oracle files too")
    files = {m.path for m in mutants}
    print(f"{len(mutants)} mutants in {len(files)} files, {problems} broken")
    return 2 if problems else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(mutants: list[Mutant], options) -> int:
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` cleans up as Ctrl-C does
    base = Path(tempfile.mkdtemp(prefix="posecast-mutants-"))
    running = Runs()
    try:
        return _run(mutants, options, base, running, started)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        running.stop()
        if options.keep:
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _run(mutants: list[Mutant], options, base: Path, running: Runs, started: float) -> int:
    files = tree_files(ROOT)
    probe_dir = base / "probe"
    probe_dir.mkdir()
    (probe_dir / "_mutation_probe.py").write_text(PROBE)
    first = Workspace(base, 0, files, ROOT, options.python, probe_dir)
    workspaces = [first] + [Workspace(base, index, files, first.tree, options.python, probe_dir)
                            for index in range(1, options.jobs)]
    pool_of_workspaces: queue.Queue[Workspace] = queue.Queue()
    for workspace in workspaces:
        pool_of_workspaces.put(workspace)
    print(f"mutation run: {len(mutants)} mutants, {options.jobs} job(s), copies of {ROOT} "
          f"({len(files)} files) under {base}", flush=True)

    selections = {id(m): select_tests(m.tests, first.tree) for m in mutants}
    test_sets = sorted({selections[id(m)].args for m in mutants
                        if selections[id(m)].runs_something})

    def using_a_copy(job):
        workspace = pool_of_workspaces.get()
        try:
            return job(workspace)
        finally:
            pool_of_workspaces.put(workspace)

    # --- baseline: every distinct selection once, unmutated
    print(f"baseline: {len(test_sets)} distinct test selections on the unmutated copy",
          flush=True)
    baseline: dict[tuple[str, ...], Outcome] = {}

    def run_baseline(args):
        def job(workspace):
            begun = time.perf_counter()
            status, output, probe = workspace.pytest(args, max(900.0, options.timeout or 0.0),
                                                     running)
            foreign = workspace.foreign_modules(probe)
            if foreign:
                raise ForeignImport(", ".join(foreign[:3]))
            if PACKAGE not in probe.get("modules", {}) and status == 0:
                return Outcome("failed", time.perf_counter() - begun,
                               f"{PACKAGE} was never imported", output)
            word = "ok" if status == 0 else ("timeout" if status is None else "failed")
            note = "" if status in (0, None) else f"pytest exit status {status}"
            if status == 5:
                note = "no test ran (selection is empty)"
            return Outcome(word, time.perf_counter() - begun, note, output)
        return using_a_copy(job)

    logs = base / "logs"
    logs.mkdir()
    bad_baselines = 0
    for number, (args, outcome) in enumerate(in_parallel(run_baseline, test_sets, options.jobs),
                                             start=1):
        if isinstance(outcome, ForeignImport):
            print(f"error: the tests imported {PACKAGE} from outside the copy ({outcome}); "
                  "a mutation run would test the working tree, not the mutants",
                  file=sys.stderr)
            return 2
        baseline[args] = outcome
        (logs / f"baseline-{number:02d}.log").write_text(" ".join(args) + "\n\n" + outcome.output)
        if outcome.status == "ok":
            print(f"  baseline ok      {outcome.seconds:6.1f}s  {' '.join(args)}", flush=True)
        else:
            bad_baselines += 1
            print(f"  BASELINE {outcome.status.upper():<7} {outcome.seconds:6.1f}s  "
                  f"{' '.join(args)}  ({outcome.note}); its mutants will not run:\n"
                  f"{tail(outcome.output)}", flush=True)

    # --- the mutants
    results: dict[int, Outcome] = {}

    def run_one(mutant: Mutant) -> Outcome:
        selection = selections[id(mutant)]
        if selection.runs_something and baseline[selection.args].status != "ok":
            return Outcome("baseline", note="its tests fail without the mutant")
        reference = baseline.get(selection.args)
        timeout = options.timeout or max(60.0, 5 * (reference.seconds if reference else 60.0))
        return using_a_copy(lambda workspace: run_mutant(mutant, selection, workspace,
                                                         timeout, running))

    print(f"mutants: {len(mutants)}", flush=True)
    for done, (mutant, outcome) in enumerate(in_parallel(run_one, mutants, options.jobs),
                                             start=1):
        if isinstance(outcome, ForeignImport):
            print(f"error: the tests imported {PACKAGE} from outside the copy ({outcome})",
                  file=sys.stderr)
            return 2
        results[mutant.line] = outcome
        (logs / f"L{mutant.line:04d}.log").write_text(outcome.output)
        note = f"  [{outcome.note}]" if outcome.note else ""
        print(f"[{done:>3}/{len(mutants)}] {outcome.status:<8} {outcome.seconds:6.1f}s  "
              f"{mutant.describe()}{note}", flush=True)

    return summary(mutants, results, bad_baselines, time.perf_counter() - started)


def in_parallel(work, items: list, jobs: int):
    """(item, work(item)) as each finishes, `jobs` at a time; a ForeignImport raised by work is
    yielded as the result. Pending work is cancelled if the caller stops early (an error, or
    Ctrl-C: the running pytest processes are then ended by `run`)."""
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            try:
                result = future.result()
            except ForeignImport as error:
                result = error
            yield futures[future], result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def summary(mutants: list[Mutant], results: dict[int, Outcome], bad_baselines: int,
            seconds: float) -> int:
    counts: dict[str, int] = {}
    for outcome in results.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    total, caught = len(mutants), counts.get("caught", 0)
    print()
    for word in ("SURVIVED", "broken", "timeout", "baseline"):
        listed = [m for m in mutants if results[m.line].status == word]
        if listed:
            print(f"{word} ({len(listed)}):")
            for mutant in listed:
                note = results[mutant.line].note
                print(f"  {mutant.describe()}{f'  [{note}]' if note else ''}")
                print(f"      {mutant.original!r} -> {mutant.mutated!r}")
    minutes, rest = divmod(round(seconds), 60)
    print(f"\ncaught {caught}/{total} ({100 * caught / total:.1f} %); "
          + ", ".join(f"{counts.get(word, 0)} {word}" for word in
                      ("SURVIVED", "broken", "timeout", "baseline"))
          + f"; {minutes} min {rest} s")
    if bad_baselines:
        print(f"{bad_baselines} test selection(s) failed without any mutant (see BASELINE above)")
    if counts.get("SURVIVED"):
        return 1
    if counts.get("broken") or counts.get("timeout") or counts.get("baseline"):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
