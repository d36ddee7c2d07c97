"""The Parsl backend (`executor: {kind: parsl}`): same records as the local
backend, a worker killed mid-task resumed by the next apply, the Slurm job
script rendered without Slurm, bad executor blocks refused before any write,
and no Parsl process or run directory left where it does not belong."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aimmat.apply.parsl import backend as parsl_backend, config as parsl_config, slurm as parsl_slurm
from aimmat.manifest import load_manifest
from aimmat.state import journal
from aimmat.state.procs import HOST
from aimmat.state.scan import scan
from tests.helpers import ROOT, emt_manifest, final_records, make_emt_campaign, tree_digest

PARSL_LOCAL = {"kind": "parsl", "provider": "local", "max_workers_per_node": 2,
               "heartbeat_period_s": 1, "heartbeat_threshold_s": 10}
SLURM = {
    "kind": "parsl", "provider": "slurm", "partition": "compute", "account": "mat-123", "walltime": "12:30:00",
    "nodes_per_block": 2, "cores_per_node": 32, "cores_per_worker": 4, "max_blocks": 3, "launcher": "srun",
    "worker_init": "module load qe/7.2\nsource /shared/venvs/aimmat/bin/activate",
}
# relax with a tight force threshold: seconds per task, long enough to kill a worker inside one
SLOW_RELAX = dict(stages=("screen", "relax"), profile={"fmax_ev_per_a": 0.001, "max_steps": 3000})


def _with(manifest: dict, executor: dict | None) -> dict:
    m = copy.deepcopy(manifest)
    if executor is not None:
        m["executor"] = executor
    return m


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _procs_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (the worker pools name their log dir)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and _alive(int(entry)):
                out.append(int(entry))
    return out


def _children_named(parent: int, text: str) -> list[int]:
    """Live children of ``parent`` whose command line (or set process title) contains ``text``."""
    out = []
    for pid in _procs_mentioning(text):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(parent):
                out.append(pid)
        except OSError:
            pass
    return out


def _interchanges() -> list[int]:
    return _children_named(os.getpid(), "interchange")


def _wait_gone(text: str, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _procs_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def emt_reference(tmp_path_factory):
    """Final records of the full EMT campaign on the local (in-process) backend."""
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("ref")
    path = make_emt_campaign(tmp, emt_manifest())
    assert run(["apply", str(path), "-q", "--jobs", "1"]) == 0
    return final_records(tmp / "camp/c")


def test_emt_campaign_through_parsl_matches_local(emt_reference, tmp_path, cli, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = make_emt_campaign(tmp_path, _with(emt_manifest(), PARSL_LOCAL))
    camp = tmp_path / "camp/c"
    code, out, err = cli("apply", path, "-q")
    assert code == 0, err
    assert final_records(camp) == emt_reference
    # the stage tasks ran in Parsl worker processes, not in this one
    pids = {json.loads(p.read_text())["pid"] for p in camp.glob("*/*/*/record.json")}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # Parsl's run directory sits in the campaign's hidden .parsl, nowhere else
    assert (camp / ".parsl/000/parsl.log").is_file()
    assert list(cwd.iterdir()) == []
    assert not (ROOT / "runinfo").exists()
    # ... and the campaign scan does not see it: no extra set, no orphan, nothing to do
    assert scan(camp).set_dirs == ["1-element", "2-element"]
    code, out, _ = cli("diff", path, "--exit-code")
    assert code == 0 and "orphan" not in out.lower()
    # interchange and worker pools are gone
    assert _wait_gone(str(camp / ".parsl")) == []
    assert _interchanges() == []
    # a second apply finds nothing to run and starts a second numbered run dir only
    code, out, _ = cli("apply", path, "-q")
    assert code == 0 and "Nothing to do" in out
    assert sorted(p.name for p in (camp / ".parsl").iterdir()) == ["000", "001"]


def test_parsl_cache_and_checkpoints_are_off(tmp_path):
    """Two identical submissions both run: Parsl never answers from a memo table."""
    ex = load_manifest(make_emt_campaign(tmp_path, _with(emt_manifest(), PARSL_LOCAL))).manifest.executor
    backend = parsl_backend.ParslBackend(ex, tmp_path / "camp/c")
    try:
        first = backend.submit(secrets.token_hex, 16).result(timeout=120)
        second = backend.submit(secrets.token_hex, 16).result(timeout=120)
        run = backend.log_dir
        assert len(_interchanges()) == 1
    finally:
        backend.shutdown()
    assert isinstance(first, str) and len(first) == 32 and first != second
    assert run.parent == tmp_path / "camp/c/.parsl"
    assert not list(run.rglob("checkpoint*"))
    assert _wait_gone(str(run)) == []
    assert _interchanges() == []


# ---------------------------------------------------------------- a worker killed mid-task
def _apply_proc(path: Path, cwd: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aimmat.cli.main", "apply", str(path), "-q", "--jobs", "1"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _kill_a_running_task(camp: Path, apply_pid: int, proc: subprocess.Popen) -> tuple[Path, int]:
    """SIGKILL the worker running some stage task, found by the pid in its `running` record."""
    while proc.poll() is None:
        for rec_path in sorted(camp.glob("*/*/relax/record.json")):
            try:
                rec = json.loads(rec_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            pid = rec.get("pid")
            if rec["status"] != "running" or pid in (None, apply_pid) or not _alive(pid):
                continue
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            after = json.loads(rec_path.read_text())
            if after["status"] == "running" and after["pid"] == pid:  # killed before it could finish
                return rec_path, pid
        time.sleep(0.01)
    pytest.fail("the apply finished before a running task could be killed")


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("slowref")
    m = emt_manifest(**SLOW_RELAX)
    m["candidate_sets"] = m["candidate_sets"][:1]
    path = make_emt_campaign(tmp, m)
    assert run(["apply", str(path), "-q", "--jobs", "1"]) == 0
    return m, final_records(tmp / "camp/c")


def test_worker_killed_mid_task_is_resumed_by_next_apply(slow_reference, tmp_path):
    manifest, reference = slow_reference
    path = make_emt_campaign(tmp_path, _with(manifest, PARSL_LOCAL))
    camp = tmp_path / "camp/c"
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    proc = _apply_proc(path, cwd)
    killed_rec, killed_pid = _kill_a_running_task(camp, proc.pid, proc)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "relax lost 1" in out.decode()  # reported, not retried in this apply
    # the killed task's record stays `running`; every other task finished
    recs = {str(p.relative_to(camp)): json.loads(p.read_text()) for p in camp.glob("*/*/*/record.json")}
    assert recs[str(killed_rec.relative_to(camp))]["status"] == "running"
    assert recs[str(killed_rec.relative_to(camp))]["pid"] == killed_pid
    assert sorted(r["status"] for r in recs.values()) == ["done"] * (len(reference) - 3 - 1) + ["running"]
    assert _wait_gone(str(camp / ".parsl")) == []

    # diff sees the interrupted task; the next apply resumes it
    diff = subprocess.run([sys.executable, "-m", "aimmat.cli.main", "diff", str(path), "--exit-code"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert diff.returncode == 10 and "interrupted" in diff.stdout
    proc = _apply_proc(path, cwd)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "relax done 1" in out.decode()

    assert final_records(camp) == reference
    resumed = json.loads(killed_rec.read_text())
    assert [a["status"] for a in resumed["attempts"]] == ["interrupted", "done"]
    assert resumed["attempts"][1]["intervention"] == "resume after interruption"
    obs = scan(camp)
    stage_recs = {(s, c, st): r for (s, c), co in obs.candidates.items() for st, r in co.stages.items()}
    assert journal.verify(camp, stage_recs) == []
    assert list(cwd.iterdir()) == []
    assert _wait_gone(str(camp / ".parsl")) == []


def test_killed_apply_leaves_no_parsl_process_and_resumes(tmp_path):
    """SIGKILL the apply itself: the interchange dies with it, the worker pool
    follows after heartbeat_threshold_s, and the next apply completes."""
    m = emt_manifest(stages=("screen", "relax"))
    m["candidate_sets"] = m["candidate_sets"][:1]
    path = make_emt_campaign(tmp_path, _with(m, {**PARSL_LOCAL, "heartbeat_threshold_s": 4}))
    camp = tmp_path / "camp/c"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _apply_proc(path, cwd)
    while proc.poll() is None and not any('"running"' in p.read_text() for p in camp.glob("*/*/*/record.json")):
        time.sleep(0.005)
    interchange = _children_named(proc.pid, "interchange")
    assert len(interchange) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_gone(str(camp / ".parsl"), timeout_s=30) == []
    assert not _alive(interchange[0])
    proc = _apply_proc(path, cwd)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    obs = scan(camp)
    recs = {(s, c, st): r for (s, c), co in obs.candidates.items() for st, r in co.stages.items()}
    assert len(recs) == 3 * 2 and all(r.status == "done" for r in recs.values())
    assert journal.verify(camp, recs) == []
    assert _wait_gone(str(camp / ".parsl")) == []


# ---------------------------------------------------------------- orphan guard
_GUARDED = """
import subprocess, sys, time
from aimmat.apply.parsl.guard import start_guard
child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # like pw.x: its own session
print(child.pid, flush=True)
start_guard(sys.argv[1], open(sys.argv[1]).read(), period_s=0.1)
time.sleep(60)
"""


def _guarded_worker(lock: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", _GUARDED, str(lock)], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


@pytest.mark.parametrize("how", ["another apply took the lock", "the apply died"])
def test_worker_of_a_gone_apply_stops_itself_and_its_engines(how, tmp_path):
    lock = tmp_path / ".aimmat.lock"
    if how == "the apply died":
        gone = subprocess.Popen(["true"])
        gone.wait()
        lock.write_text(json.dumps({"pid": gone.pid, "host": HOST, "started": "t0"}))
    else:
        lock.write_text(json.dumps({"pid": os.getpid(), "host": HOST, "started": "t0"}))
    proc, child = _guarded_worker(lock)
    try:
        if how == "another apply took the lock":
            time.sleep(0.6)
            assert proc.poll() is None and _alive(child)  # same holder: keeps working
            lock.write_text(json.dumps({"pid": os.getpid(), "host": HOST, "started": "t1"}))
        assert proc.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        for pid in (proc.pid, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- Slurm job script
@pytest.fixture
def no_slurm_commands(tmp_path, monkeypatch):
    """sbatch/sacct/squeue on PATH that only leave a trace: the preview must run none."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    trace = tmp_path / "slurm-called"
    for name in ("sbatch", "sacct", "squeue", "scancel"):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\necho {name} >> {trace}\necho 'Submitted batch job 1'\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return trace


def test_slurm_script_has_declared_partition_account_walltime_launcher(tmp_path, no_slurm_commands):
    path = make_emt_campaign(tmp_path, _with(emt_manifest(), SLURM))
    spec = load_manifest(path)
    script = parsl_slurm.slurm_script(spec)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --partition=compute" in lines
    assert "#SBATCH --account=mat-123" in lines
    assert "#SBATCH --time=750" in lines  # 12:30:00 in minutes, as Slurm takes it
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --cpus-per-task=32" in lines
    assert "module load qe/7.2" in lines and "source /shared/venvs/aimmat/bin/activate" in lines
    # srun starts one worker pool per node of the block; 32 / 4 = 8 workers per node
    assert any(line.startswith("srun --ntasks 2 ") for line in lines)
    assert f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool" in script
    assert "--max_workers_per_node=8" in script and "-c 4.0" in script
    assert str(spec.campaign_dir / ".parsl/NNN/submit_scripts") in script
    # nothing ran, nothing was written
    assert not no_slurm_commands.exists()
    assert not spec.campaign_dir.exists()
    # mpirun instead of srun, from the same declaration
    m = _with(emt_manifest(), {**SLURM, "launcher": "mpirun", "launcher_overrides": "--bind-to none"})
    script = parsl_slurm.slurm_script(load_manifest(make_emt_campaign(tmp_path, m)))
    lines = script.splitlines()
    assert "WORKERCOUNT=2" in lines  # one pool per node
    assert any(line.startswith("mpirun -np $WORKERCOUNT --bind-to none ") for line in lines)
    assert "srun" not in script
    # one node per block and no launcher declared: the job script runs the pool itself
    one = {k: v for k, v in SLURM.items() if k != "launcher"} | {"nodes_per_block": 1}
    script = parsl_slurm.slurm_script(load_manifest(make_emt_campaign(tmp_path, _with(emt_manifest(), one))))
    lines = script.splitlines()
    assert "#SBATCH --nodes=1" in lines
    assert any(line.strip() == "CMD $COUNT &" for line in lines)  # SingleNodeLauncher's loop
    assert "srun" not in script and "mpirun" not in script


def test_slurm_script_command(tmp_path, cli, capsys, no_slurm_commands):
    path = make_emt_campaign(tmp_path, _with(emt_manifest(), SLURM))
    code, out, _ = cli("slurm-script", path)

    def stable(text):  # Parsl stamps the job name with the time
        return [line for line in text.splitlines() if not re.search(r"\d{8}\.\d+", line)]

    assert code == 0 and stable(out) == stable(parsl_slurm.slurm_script(load_manifest(path)))
    assert "#SBATCH --partition=compute" in out and "#SBATCH --account=mat-123" in out
    assert parsl_slurm.main([str(path)]) == 0 and stable(capsys.readouterr().out) == stable(out)  # python -m ...parsl.slurm
    local = make_emt_campaign(tmp_path, emt_manifest())
    code, out, err = cli("slurm-script", local)
    assert code == 2 and out == "" and "provider: slurm" in err
    assert not no_slurm_commands.exists()


def test_slurm_module_main_refuses_a_non_parsl_manifest(tmp_path, capsys, no_slurm_commands):
    """`python -m aimmat.apply.parsl.slurm` on a local-executor manifest: exit 2, the CLI's message."""
    local = make_emt_campaign(tmp_path, emt_manifest())
    assert parsl_slurm.main([str(local)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "provider: slurm" in err
    assert not no_slurm_commands.exists()


def test_width_follows_declared_workers():
    from aimmat.manifest.models import Manifest

    m = Manifest.model_validate(_with(emt_manifest(), SLURM))
    assert parsl_config.width(m.executor) == 3 * 2 * 8
    m = Manifest.model_validate(_with(emt_manifest(), {**PARSL_LOCAL, "max_workers_per_node": None, "cores_per_worker": 0.5}))
    assert parsl_config.width(m.executor) == math.floor((os.cpu_count() or 1) / 0.5)


# ---------------------------------------------------------------- bad executor blocks
BAD = {
    "slurm key with provider local": ({**PARSL_LOCAL, "partition": "compute"}, "executor.partition: `partition` is a Slurm setting"),
    "typo": ({**SLURM, "partiton": "compute"}, "executor.partiton: unknown key"),
    "walltime not HH:MM:SS": ({**SLURM, "walltime": "90 minutes"}, "executor.walltime: give the walltime as HH:MM:SS"),
    "walltime under a minute": ({**SLURM, "walltime": "00:00:30"}, "executor.walltime: walltime must be at least one minute"),
    "slurm without walltime": ({k: v for k, v in SLURM.items() if k != "walltime"}, "walltime: required with provider: slurm"),
    "unknown kind": ({"kind": "dask"}, "executor: Input tag 'dask'"),
    "unknown provider": ({**PARSL_LOCAL, "provider": "pbs"}, "executor.provider"),
    "zero max_blocks": ({**PARSL_LOCAL, "max_blocks": 0}, "executor.max_blocks"),
    "string nodes": ({**SLURM, "nodes_per_block": "two"}, "executor.nodes_per_block"),
    "not an sbatch line": ({**SLURM, "scheduler_options": ["--gres=gpu:1"]}, "executor.scheduler_options"),
    "more cores per worker than per node": ({**SLURM, "cores_per_worker": 64}, "cores_per_node (32) is below cores_per_worker"),
    "local executor with keys": ({"kind": "local", "jobs": 4}, "executor.jobs: unknown key"),
}


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("applied")
    path = make_emt_campaign(tmp, emt_manifest(stages=("screen",)))
    assert run(["apply", str(path), "-q", "--jobs", "1"]) == 0
    return tmp


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["diff", "apply"])
def test_bad_executor_block_exit_3_folder_untouched(case, command, applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    before = tree_digest(work / "camp")
    block, expected = BAD[case]
    path = work / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(emt_manifest(stages=("screen",)), block), sort_keys=False))
    code, out, err = cli(command, path)
    assert code == 3, (case, out, err)
    assert expected in err, (case, err)
    assert "bad.yaml" in err
    assert tree_digest(work / "camp") == before
    assert not (work / "camp/c/.parsl").exists()


def test_error_path_names_the_line_of_the_key(tmp_path, cli):
    path = make_emt_campaign(tmp_path, _with(emt_manifest(), {**PARSL_LOCAL, "account": "x"}))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith("account:"))
    code, _, err = cli("diff", path)
    assert code == 3
    assert f"manifest.yaml:{line}: executor.account:" in err


def test_qe_ranks_must_fit_a_worker(tmp_path, cli):
    m = _with(emt_manifest(), {**PARSL_LOCAL, "cores_per_worker": 2})
    m["profiles"]["q"] = {"kind": "qe", "pseudo": {"family": "debian"}, "ecutwfc_ry": 30, "mpi_ranks": 4}
    code, _, err = cli("diff", make_emt_campaign(tmp_path, m))
    assert code == 3
    assert "profiles.q.mpi_ranks: 4 ranks do not fit in a worker of executor.cores_per_worker = 2.0" in err


def test_executor_block_changes_no_stage_key(tmp_path):
    from aimmat.plan.plan import plan
    from aimmat.resolve import resolve

    a = load_manifest(make_emt_campaign(tmp_path / "a", emt_manifest()))
    b = load_manifest(make_emt_campaign(tmp_path / "b", _with(emt_manifest(), SLURM)))
    keys = [{(x.set_name, x.cand_id, x.stage): x.key for x in plan(resolve(s), scan(s.campaign_dir)).actions} for s in (a, b)]
    assert keys[0] == keys[1] and len(keys[0]) == 25


# ---------------------------------------------------------------- CHGNet
@pytest.mark.slow
def test_chgnet_campaign_through_parsl_matches_local(tmp_path, cli):
    (tmp_path / "s").mkdir()
    for name in ("Si", "Al"):
        shutil.copy(ROOT / f"manifests/structures/1-element/{name}.cif", tmp_path / "s" / f"{name}.cif")
    m = {
        "campaign": {"name": "c", "root": "camp"},
        "profiles": {"chgnet": {"kind": "chgnet", "fmax_ev_per_a": 0.05, "max_steps": 200}},
        "candidate_sets": [{"name": "1-element", "elements": 1, "source": {"kind": "files", "glob": "s/*.cif"}}],
        "stages": {"screen": {}, "relax": {"profile": "chgnet"}, "scf": {"profile": "chgnet"}},
    }
    recs = {}
    for name, executor in (("local", None), ("parsl", {**PARSL_LOCAL, "max_workers_per_node": 1})):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**_with(m, executor), "campaign": {"name": name, "root": "camp"}}))
        code, _, err = cli("apply", path, "-q", "--jobs", "1")
        assert code == 0, err
        recs[name] = final_records(tmp_path / "camp" / name)
    local, parsl = recs["local"], recs["parsl"]
    assert sorted(local) == sorted(parsl) and len(local) == 2 * 4
    for k in local:
        assert {f: v for f, v in local[k].items() if f != "outputs"} == {f: v for f, v in parsl[k].items() if f != "outputs"}, k
        _close(local[k].get("outputs"), parsl[k].get("outputs"), k)
    assert all(v.get("status", "done") == "done" for v in parsl.values())
    assert parsl["1-element/Si/scf"]["outputs"]
    assert _wait_gone(str(tmp_path / "camp/parsl/.parsl")) == []


def _close(a, b, where) -> None:
    """Equal, numbers to 1e-6 relative (torch may sum in another order in another process)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), where
    else:
        assert a == b, where
