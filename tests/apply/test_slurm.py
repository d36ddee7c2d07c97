"""The Parsl backend on a real Slurm: `executor: {kind: parsl, provider: slurm}`
against the one-node cluster of `make slurm` (scripts/slurm-local.sh).

The same EMT records as the local backend; a block scancelled mid-campaign
whose tasks the next apply resumes; pw.x (one rank, and two under mpirun)
in a worker pool started with `launcher: srun`. Every test skips, naming
why, when `sinfo` is missing or the cluster is not up."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aimmat.apply.parsl import backend as parsl_backend
from aimmat.manifest import load_manifest
from aimmat.state import journal
from aimmat.state.scan import scan
from tests.helpers import emt_manifest, final_records, make_emt_campaign

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

STATE_DIR = Path(os.environ.get("AIMMAT_SLURM_STATE", "/run/aimmat-slurm"))
# Workers find the apply's venv first on PATH, wherever the checkout lives.
WORKER_INIT = f"export PATH={Path(sys.executable).parent}:$PATH"
# relax with a tight force threshold: seconds per task, long enough to scancel a block inside one
SLOW_RELAX = dict(stages=("screen", "relax"), profile={"fmax_ev_per_a": 0.003, "max_steps": 3000})
DEBIAN_PSEUDO = "/usr/share/espresso/pseudo"


def _cmd(*argv: str, timeout: float = 30) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, f"{type(exc).__name__}: {exc}"
    return p.returncode, (p.stdout + p.stderr).strip()


def _why_not_up() -> str | None:
    """None when the cluster takes jobs, else why not (the start script's own reason included)."""
    why = ""
    if (STATE_DIR / "why").is_file():
        why = f"; last `scripts/slurm-local.sh start`: {(STATE_DIR / 'why').read_text().strip()}"
    for exe in ("sinfo", "scontrol", "squeue", "sbatch", "scancel"):
        if shutil.which(exe) is None:
            return f"{exe} not found: no Slurm here (as root: make slurm){why}"
    code, out = _cmd("scontrol", "ping")
    if code != 0 or "is UP" not in out:
        return f"slurmctld does not answer (scontrol ping: {out or code!r}; as root: make slurm){why}"
    code, out = _cmd("sinfo", "-h", "-o", "%t")
    if code != 0 or not re.search(r"^(idle|mix)\b", out, re.M):
        return f"no idle node (sinfo -h -o %t: {out!r}){why}"
    return None


class Cluster:
    """The partition, node and CPUs the tests submit to."""

    def __init__(self):
        code, out = _cmd("sinfo", "-h", "-o", "%R %N %c %a %t")
        # the first partition that is up with an idle or mixed node
        for line in out.splitlines():
            part, node, cpus, avail, state = line.split()[:5]
            if avail == "up" and state.startswith(("idle", "mix")):
                self.partition, self.node, self.cpus = part, node, int(cpus.rstrip("+"))
                return
        pytest.skip(f"no partition that is up with an idle node (sinfo: {out!r})")

    def executor(self, **extra) -> dict:
        return {
            "kind": "parsl", "provider": "slurm", "partition": self.partition, "walltime": "00:15:00",
            "cores_per_node": self.cpus, "cores_per_worker": 1, "max_blocks": 1,
            "heartbeat_period_s": 1, "heartbeat_threshold_s": 10, "worker_init": WORKER_INIT, **extra,
        }


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    why = _why_not_up()
    if why:
        pytest.skip(why)
    return Cluster()


def _jobs_of(camp: Path) -> list[tuple[str, str]]:
    """(job id, state) of the Slurm jobs whose script lies in ``camp``'s Parsl run directory."""
    code, out = _cmd("squeue", "-h", "-o", "%i|%t|%o")
    assert code == 0, out
    return [(jid, st) for jid, st, script in (line.split("|", 2) for line in out.splitlines())
            if script.startswith(str(camp / ".parsl") + "/")]


def _wait_no_jobs(camp: Path, timeout_s: float = 60) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout_s
    while (left := _jobs_of(camp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _job_ids(run: Path) -> list[str]:
    """Slurm job ids of the blocks one apply submitted, in order (from its parsl.log)."""
    return re.findall(r"Launched block \d+ with job ID (\d+)", (run / "parsl.log").read_text())


def _job_script(run: Path) -> Path:
    """The sbatch script of block 0 of one apply."""
    (script,) = [p for p in (run / "submit_scripts").iterdir()
                 if p.name.startswith("parsl.htex.block-0.") and not p.name.endswith((".stdout", ".stderr"))]
    return script


def _with(manifest: dict, executor: dict | None) -> dict:
    m = json.loads(json.dumps(manifest))
    if executor is not None:
        m["executor"] = executor
    return m


# ---------------------------------------------------------------- the worker's environment
@pytest.mark.parametrize("launcher", ["single", "srun"])
def test_worker_environment_in_a_slurm_block(cluster, launcher, tmp_path):
    ex = load_manifest(make_emt_campaign(tmp_path, _with(emt_manifest(), cluster.executor(launcher=launcher)))).manifest.executor
    camp = tmp_path / "camp/c"
    backend = parsl_backend.ParslBackend(ex, camp)
    names = ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_OVERLAP", "PATH", "OMPI_MCA_ras")
    # what a QE profile `launcher: "srun --ntasks={ranks} --cpus-per-task=1"` runs, from inside a worker
    nested = ["timeout", "60", "srun", f"--ntasks={min(2, cluster.cpus)}", "--cpus-per-task=1", "hostname"]
    try:
        futs = {n: backend.submit(os.getenv, n) for n in names}
        env = {n: f.result(timeout=180) for n, f in futs.items()}
        hosts = backend.submit(subprocess.check_output, nested).result(timeout=120).decode().split()
        run = backend.log_dir
    finally:
        backend.shutdown()
    (job,) = _job_ids(run)
    assert env["SLURM_JOB_ID"] == job and env["SLURM_JOB_PARTITION"] == cluster.partition
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    # pw.x sees the job script's environment, not the worker step's, and mpirun a plain node
    assert env["SLURM_STEP_ID"] is None
    if launcher == "srun":  # the pool is task 0 of step 0: its task's variables are gone too
        assert env["SLURM_PROCID"] is None
    # a job step started from a worker shares the pool step's CPUs (else it would wait for them forever)
    assert env["SLURM_OVERLAP"] == ("1" if launcher == "srun" else None)
    assert hosts == [cluster.node] * min(2, cluster.cpus)
    assert env["OMPI_MCA_ras"] == "^slurm"
    text = _job_script(run).read_text()
    assert f"#SBATCH --partition={cluster.partition}" in text and "#SBATCH --time=15" in text and WORKER_INIT in text
    assert ("srun --ntasks 1 " in text) == (launcher == "srun")
    assert _wait_no_jobs(camp) == []  # shutdown scancelled the block


# ---------------------------------------------------------------- same records as local
@pytest.fixture(scope="module")
def emt_reference(tmp_path_factory):
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("ref")
    assert run(["apply", str(make_emt_campaign(tmp, emt_manifest())), "-q", "--jobs", "1"]) == 0
    return final_records(tmp / "camp/c")


def test_emt_campaign_through_slurm_matches_local(cluster, emt_reference, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = make_emt_campaign(tmp_path, _with(emt_manifest(), cluster.executor()))
    camp = tmp_path / "camp/c"
    code, out, err = cli("apply", path, "-q")
    assert code == 0, err
    assert final_records(camp) == emt_reference
    pids = {json.loads(p.read_text())["pid"] for p in camp.glob("*/*/*/record.json")}
    assert os.getpid() not in pids  # the stage tasks ran in the block's workers
    (job,) = _job_ids(camp / ".parsl/000")
    assert (camp / ".parsl/000/submit_scripts").is_dir()
    assert _wait_no_jobs(camp) == []  # the block was cancelled at the end
    code, out, _ = cli("diff", path, "--exit-code")
    assert code == 0
    assert not (tmp_path / "runinfo").exists()


# ---------------------------------------------------------------- scancel mid-campaign
def _apply_proc(path: Path, cwd: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aimmat.cli.main", "apply", str(path), "-q", "--jobs", "1"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _running_relax(camp: Path, apply_pid: int) -> list[Path]:
    out = []
    for p in sorted(camp.glob("*/*/relax/record.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec["status"] == "running" and rec.get("pid") not in (None, apply_pid):
            out.append(p)
    return out


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("slowref")
    m = emt_manifest(**SLOW_RELAX)
    m["candidate_sets"] = m["candidate_sets"][:1]
    assert run(["apply", str(make_emt_campaign(tmp, m)), "-q", "--jobs", "1"]) == 0
    return m, final_records(tmp / "camp/c")


def test_scancel_mid_campaign_then_next_apply_resumes(cluster, slow_reference, tmp_path):
    manifest, reference = slow_reference
    path = make_emt_campaign(tmp_path, _with(manifest, cluster.executor()))
    camp = tmp_path / "camp/c"
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    proc = _apply_proc(path, cwd)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            running = _running_relax(camp, proc.pid)
            jobs = [jid for jid, st in _jobs_of(camp) if st == "R"]
            if running and jobs:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no relax ran in a Slurm job before the apply ended (rc {proc.poll()})")
        code, out = _cmd("scancel", jobs[0])
        assert code == 0, out
        t_cancel, t_cancel_epoch = time.monotonic(), time.time()
        # the apply notices the lost pool (heartbeat_threshold_s), reports its
        # tasks lost, submits a new block for the rest, and ends
        out, err = proc.communicate(timeout=240)
        waited = time.monotonic() - t_cancel
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert re.search(r"relax lost \d", out), out
    recs = {str(p.relative_to(camp)): json.loads(p.read_text()) for p in camp.glob("*/*/*/record.json")}
    lost = sorted(k for k, r in recs.items() if r["status"] == "running")
    assert lost and all(r["status"] in ("done", "running") for r in recs.values())
    assert waited < 120, f"{waited:.0f} s from scancel to the end of the apply"
    assert _wait_no_jobs(camp) == []
    job_ids = _job_ids(camp / ".parsl/000")
    assert job_ids[0] == jobs[0]  # the cancelled block (then a replacement, if tasks were left)
    if len(job_ids) > 1:
        # replaced once the lost pool is noticed (heartbeat_threshold_s 10) and
        # the provider next looks (every 10 s here, not Parsl's fixed 60 s)
        launched = re.search(r"^(\d+\.\d+) .*Launched block 1 with job ID", (camp / ".parsl/000/parsl.log").read_text(), re.M)
        assert float(launched.group(1)) - t_cancel_epoch < 40

    diff = subprocess.run([sys.executable, "-m", "aimmat.cli.main", "diff", str(path), "--exit-code"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert diff.returncode == 10 and "interrupted" in diff.stdout
    proc = _apply_proc(path, cwd)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert final_records(camp) == reference
    for rel in lost:
        attempts = json.loads((camp / rel).read_text())["attempts"]
        assert [a["status"] for a in attempts] == ["interrupted", "done"], rel
    obs = scan(camp)
    stage_recs = {(s, c, st): r for (s, c), co in obs.candidates.items() for st, r in co.stages.items()}
    assert journal.verify(camp, stage_recs) == []
    assert _wait_no_jobs(camp) == []
    assert list(cwd.iterdir()) == []


# ---------------------------------------------------------------- pw.x in an srun-started worker pool
def _si_campaign(tmp: Path, ranks: int, executor: dict | None) -> Path:
    from tests.engines.qe.conftest import si

    d = tmp / "s/1-element"
    d.mkdir(parents=True, exist_ok=True)
    si().to(filename=str(d / "Si.vasp"), fmt="poscar")
    m = {
        "campaign": {"name": "q", "root": "camp"},
        "profiles": {"qe": {"kind": "qe", "preset": "fast", "walltime_s": 300, "mpi_ranks": ranks,
                            "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF"}},
                            "ecutwfc_ry": 12, "kpoints": [2, 2, 2]}},
        "candidate_sets": [{"name": "1-element", "elements": 1, "source": {"kind": "files", "glob": "s/1-element/*.vasp"}}],
        "stages": {"relax": {"profile": "qe"}},
    }
    path = tmp / "m.yaml"
    path.write_text(yaml.safe_dump(_with(m, executor)))
    return path


@pytest.fixture(scope="module")
def qe_reference(tmp_path_factory):
    """The Si relax on this machine's local backend, one rank."""
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("qeref")
    assert run(["apply", str(_si_campaign(tmp, 1, None)), "-q", "--jobs", "1"]) == 0
    return json.loads((tmp / "camp/q/1-element/Si/relax/record.json").read_text())


@pytest.mark.needs_qe
@pytest.mark.skipif(not Path(DEBIAN_PSEUDO, "Si.pbe-rrkj.UPF").is_file(), reason="Debian's Si pseudopotential missing")
@pytest.mark.parametrize("ranks", [1, 2])
def test_pw_x_relax_in_a_worker_pool_started_by_srun(cluster, qe_reference, ranks, tmp_path, cli):
    """One rank: pw.x is an MPI singleton inside the pool's job step (Open MPI
    aborts it as "direct launched by srun" without PMI unless the worker drops
    the step's variables). Two ranks: the profile's default `mpirun -np 2`
    inside a block Parsl asked one task per node for (one Slurm slot)."""
    if ranks > cluster.cpus:
        pytest.skip(f"{ranks} ranks need {ranks} CPUs; the node has {cluster.cpus}")
    path = _si_campaign(tmp_path, ranks, cluster.executor(launcher="srun", cores_per_worker=ranks))
    code, out, err = cli("apply", path, "-q")
    assert code == 0, err + out
    camp = tmp_path / "camp/q"
    rec = json.loads((camp / "1-element/Si/relax/record.json").read_text())
    assert rec["status"] == "done", rec["attempts"]
    assert rec["key"] == qe_reference["key"]
    got, ref = rec["outputs"], qe_reference["outputs"]
    assert got["engine"]["calculation"] == "vc-relax" and got["engine"]["returncode"] == 0
    assert got["energy_per_atom_ev"] == pytest.approx(ref["energy_per_atom_ev"], abs=1e-5)
    assert got["pressure_gpa"] == pytest.approx(ref["pressure_gpa"], abs=0.01)
    pw_out = (camp / "1-element/Si/relax/attempt-1/pw.out").read_text()
    assert "JOB DONE" in pw_out
    if ranks > 1:
        assert re.search(rf"running on\s+{ranks} processors", pw_out)
    (job,) = _job_ids(camp / ".parsl/000")
    assert "srun --ntasks 1 " in _job_script(camp / ".parsl/000").read_text()
    assert _wait_no_jobs(camp) == []
