"""Benchmark: a real generated campaign through Quantum ESPRESSO.

Builds a manifest in a work folder (a temporary one unless --workdir): two
generator sets (2 and 3 elements) sampled from the committed checkpoint
``manifests/checkpoints/aimmat-small.pt`` (sha256 computed here), --count
candidates each, ranked by the predicted tensor with a shortlist of --top-k
per set; ``campaign.palette`` restricted to light elements whose Debian
pseudopotentials exist for one functional (default LDA: Al B C Mg O Si, all
norm-conserving except O, whose 8x ecutrho the converge stage's coarse cutoff
mesh makes affordable: a CO cutoff ladder 30-90 Ry took 4 min); a screen with a CHGNet pre-relaxation (the checks, and then the DFT chain,
start from the pre-relaxed cell; --no-prerelax for the plain screen and the
generated cells); then
the QE chain converge -> relax -> scf -> elastic with the default ``kind: qe``
profile physics (no preset unless --preset; Debian family, the functional
above), default elastic magnitudes and retry policy. Two resource caps:
``walltime_s`` per pw.x run (default 900 s), so that a pathological
candidate ends as out_of_walltime instead of hanging the benchmark, and the
converge stage's ``max_kpoints`` (default 1000 irreducible k-points of the
sheared probe), so that a metal whose shear stress needs a denser mesh ends
not_converged_settings instead of running for hours (fcc Al needs 44^3; a
5-atom generated metal, BCO3, took 21 min per SCF at 1,002 k-points and its
ladder's next meshes need 1,276 and 2,920): a cost cap, reported as such, not
a physics verdict; the stage refuses a ladder that cannot take two steps
under it before its probe relaxation.

It runs ``aimmat apply --jobs 2`` as a subprocess, times it, and reads the
campaign's records (``<set>/<cand>/candidate.json`` and
``<set>/<cand>/<stage>/record.json``) and pw.x outputs. Printed: date,
machine (cores, CPU model), pw.x version, the command; candidates
generated, screen passes, shortlisted, elastic-ready, pass_both (fit RMS and
positive-definite gates of the elastic stage); each failure class with its
count (``stage: failure_code``, screened_out with the failed criteria,
not_converged_settings, elastic gates); pw.x calls (pw.out files) and
core-hours (PWSCF WALL lines x MPI ranks) in all and per validated tensor;
retries that changed the outcome (a stage whose last attempt succeeded after
a failed one); every shortlisted candidate that did not reach elastic-ready,
with its class. ``aimmat status --json`` is saved beside the manifest and its
elasticready, screened_out and not_converged_settings totals cross-checked.

    .venv/bin/python bench/qe_campaign.py [--count 4] [--top-k 1] [--full] [--workdir DIR]
        [--functional lda] [--palette Al,B,C,Mg,O,Si] [--preset balanced] [--walltime-s 900]
        [--max-kpoints 1000] [--jobs 2] [--no-prerelax] [--apply-timeout-s S] [--summarize-only] [--json]

Default (4 candidates per set, top 1 per set) is sized for about an
hour on 2 cores (a 2-atom oxide's cutoff ladder alone took ~15 min on a
loaded 2-core VM); --full generates 15 per set and shortlists 5 per set.
--summarize-only reads an existing --workdir without applying again.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "manifests" / "checkpoints" / "aimmat-small.pt"
DEBIAN_PSEUDO = Path("/usr/share/espresso/pseudo")
DEFAULT_PALETTE = ("Al", "B", "C", "Mg", "O", "Si")  # Debian LDA; O is ultrasoft (ecutrho 8x), affordable with the coarse cutoff mesh
DEFAULT_MAX_KPOINTS = 1000
CHAIN = ("screen", "converge", "relax", "scf", "elastic")
ENGINE_STAGES = ("converge", "relax", "scf", "elastic")
RANK_WEIGHTS = {"log10_k_vrh": 1.0, "log10_g_vrh": 1.0, "uncertainty": -2.0}
SETS = (("generated-2", 2, 1), ("generated-3", 3, 2))  # (name, elements, seed)
FULL_COUNT, FULL_TOP_K = 15, 5
CAMPAIGN = "qe-bench"


# ------------------------------------------------------------------ manifest
def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(*, count: int = 4, top_k: int = 1, palette=DEFAULT_PALETTE, functional: str = "lda",
                   preset: str | None = None, walltime_s: float = 900.0, prerelax: bool = True,
                   max_kpoints: int = DEFAULT_MAX_KPOINTS, checkpoint: Path = CHECKPOINT, name: str = CAMPAIGN) -> dict:
    """The benchmark manifest as a dict (write it with ``write_manifest``)."""
    qe = {"kind": "qe", "pseudo": {"family": "debian", "functional": functional}, "walltime_s": float(walltime_s)}
    if preset:
        qe = {"kind": "qe", "preset": preset, **{k: v for k, v in qe.items() if k != "kind"}}
    profiles = {"qe": qe}
    screen = {"min_distance_a": 0.5, "density_min_g_cm3": 0.5, "density_max_g_cm3": 25.0, "charge_neutral": True}
    if prerelax:
        profiles["chgnet-fast"] = {"kind": "chgnet", "model": "0.3.0", "fmax_ev_per_a": 0.02, "max_steps": 500,
                                   "optimizer": "FIRE"}
        screen["prerelax_profile"] = "chgnet-fast"
    return {
        "version": 1,
        "campaign": {"name": name, "root": "campaigns", "palette": list(palette)},
        "profiles": profiles,
        "models": {"small": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_file(Path(checkpoint))}},
        "candidate_sets": [
            {"name": set_name, "elements": n_el,
             "source": {"kind": "generator", "model": "small", "count": int(count), "seed": seed},
             "rank": {"weights": dict(RANK_WEIGHTS), "top_k": int(top_k)}}
            for set_name, n_el, seed in SETS
        ],
        "stages": {
            "screen": screen,
            "converge": {"profile": "qe", "max_kpoints": int(max_kpoints)},
            "relax": {"profile": "qe"},
            "scf": {"profile": "qe"},
            "elastic": {"profile": "qe"},  # default magnitudes and strain set
        },
    }


def write_manifest(workdir: Path, manifest: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "manifest.yaml"
    path.write_text("# written by bench/qe_campaign.py\n" + yaml.safe_dump(manifest, sort_keys=False))
    return path


# ------------------------------------------------------------------ pw.x outputs
_WALL_RE = re.compile(r"PWSCF\s*:.*CPU(.*)WALL")


def pw_wall_s(text: str) -> float | None:
    """Wall time from pw.x's final 'PWSCF : ... CPU ... WALL' line (None if absent):
    '12.3s', '1m23.45s', '1h 2m', '1d 3h'."""
    found = None
    for line in text.splitlines():
        m = _WALL_RE.search(line)
        if m:
            found = m.group(1)
    if found is None:
        return None
    total = 0.0
    for value, unit in re.findall(r"([\d.]+)\s*([dhms])", found):
        total += float(value) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


def pw_runs(campaign: Path) -> dict:
    """pw.x calls under ``campaign``: count, core-seconds, runs without a WALL line."""
    calls, core_s, no_wall, version, reused = 0, 0.0, 0, None, 0
    for out in sorted(campaign.rglob("pw.out")):
        text = out.read_text(errors="replace")
        if version is None:
            m = re.search(r"Program PWSCF (v\.\S+)", text)
            version = m.group(1) if m else None
        facts = {}
        run_json = out.parent / "run.json"
        if run_json.is_file():
            try:
                facts = json.loads(run_json.read_text())
            except ValueError:
                facts = {}
        if facts.get("reused_from"):  # a copy of a run an interrupted attempt finished: counted there
            reused += 1
            continue
        calls += 1
        ranks = int(facts.get("ranks") or 1)
        wall = pw_wall_s(text)
        if wall is None:  # killed or still running: the process wall time, if execute recorded it
            no_wall += 1
            wall = float(facts.get("wall_s") or 0.0)
        core_s += wall * ranks
    return {"calls": calls, "core_hours": core_s / 3600.0, "no_wall_line": no_wall, "version": version, "reused": reused}


# ------------------------------------------------------------------ records
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shortlist(cands: dict, rank: dict | None) -> set[str]:
    """Members of a ranked set's shortlist, as apply computes it: screen passes
    ranked by the predicted score, best top_k; none while any candidate waits."""
    if rank is None:
        return set(cands)
    weights, top_k = rank.get("weights") or RANK_WEIGHTS, rank.get("top_k")
    scored, waiting = [], False
    for cid, c in cands.items():
        scr = c["records"].get("screen")
        if c["candidate"] is None or scr is None or scr.get("status") == "running":
            waiting = True
        elif scr.get("status") == "done" and scr.get("outputs", {}).get("strict_pass") and c["candidate"].get("prediction"):
            terms = c["candidate"]["prediction"]["terms"]
            scored.append((-sum(w * terms[t] for t, w in weights.items()), cid))
    if waiting:
        return set()
    scored.sort()
    return {cid for _, cid in scored[: top_k or len(scored)]}


def candidate_class(records: dict, chain=CHAIN) -> tuple[str, str | None]:
    """(state, class) of one candidate from its stage records, walking the chain:
    state is 'pass_both', 'elasticready' (a gate failed), 'not_shortlisted'
    (screen passed, no engine record), 'screened_out', 'failed', 'running' or
    'pending'; class is 'stage: code' for anything short of pass_both."""
    for stage in chain:
        r = records.get(stage)
        if r is None:
            if stage in ENGINE_STAGES and stage == next(s for s in chain if s in ENGINE_STAGES):
                return "not_shortlisted", None
            return "pending", f"{stage}: pending"
        if r.get("status") == "running":
            return "running", f"{stage}: running"
        if r.get("status") == "failed":
            return "failed", f"{stage}: {r.get('failure_code') or 'unknown'}"
        out = r.get("outputs") or {}
        if stage == "screen" and not out.get("strict_pass"):
            bad = sorted(k for k, c in (out.get("criteria") or {}).items() if not c.get("pass"))
            return "screened_out", "screen: screened_out (" + (", ".join(bad) or "?") + ")"
        if stage == "elastic":
            gates = [g for g, key in (("fit_rms", "pass_fit_rms"), ("pd", "pass_pd")) if not out.get(key)]
            if out.get("complete") is False:
                gates.append("incomplete")
            if gates:
                return "elasticready", "elastic: failed gate " + "+".join(gates)
            return "pass_both", None
    return "pending", None


def _last_message(records: dict, cls: str | None) -> str | None:
    """The message of the last attempt of the stage that failed (``cls`` 'stage: code'), shortened: a cost
    cap and a physics verdict share the class not_converged_settings and differ only here."""
    stage = (cls or "").split(":")[0]
    rec = records.get(stage) or {}
    if rec.get("status") != "failed" or not rec.get("attempts"):
        return None
    msg = " ".join(str(rec["attempts"][-1].get("message") or "").split())
    return msg if len(msg) <= 200 else msg[:197] + "..."


def retries(records: dict) -> tuple[int, int, list[str]]:
    """(records retried, retries that changed the outcome, descriptions) over chain stages."""
    retried, changed, what = 0, 0, []
    for stage in CHAIN:
        r = records.get(stage)
        att = (r or {}).get("attempts") or []
        if len(att) < 2:
            continue
        retried += 1
        failed = [a for a in att[:-1] if a.get("status") == "failed"]
        if att[-1].get("status") == "done" and failed:
            changed += 1
            codes = ", ".join(a.get("failure_code") or "?" for a in failed)
            what.append(f"{stage}: {codes} -> done after {len(att)} attempts")
    return retried, changed, what


def summarize(campaign: Path, manifest: dict) -> dict:
    """Counts of one campaign folder, from its records and pw.x outputs."""
    chain = tuple(s for s in CHAIN if s in (manifest.get("stages") or {}))
    out = {"campaign": str(campaign), "generated": 0, "expected": 0, "screened": 0, "screen_pass": 0,
           "shortlisted": 0, "elastic_ready": 0, "pass_both": 0, "failure_classes": {}, "not_shortlisted": 0,
           "pending": 0, "running": 0, "retried": 0, "retries_changed_outcome": 0, "retry_details": [], "shortlisted_not_ready": [],
           "per_set": {}}
    classes: Counter = Counter()
    for cset in manifest["candidate_sets"]:
        name = cset["name"]
        src = cset.get("source") or {}
        out["expected"] += int(src.get("count", 0)) if src.get("kind") == "generator" else 0
        cands = {}
        for cdir in sorted(p for p in (campaign / name).glob("*") if p.is_dir()):
            recs = {}
            for rp in sorted(cdir.glob("*/record.json")):
                rec = _load(rp)
                if rec is not None:
                    recs[rp.parent.name] = rec
            cands[cdir.name] = {"candidate": _load(cdir / "candidate.json"), "records": recs}
        sl = _shortlist(cands, cset.get("rank"))
        # a candidate with an engine record went past the shortlist, whatever the ranking says now
        sl |= {cid for cid, c in cands.items() if any(s in c["records"] for s in ENGINE_STAGES)}
        per = Counter()
        for cid, c in cands.items():
            if c["candidate"] is None:
                continue
            per["generated"] += 1
            scr = c["records"].get("screen")
            if scr is not None and scr.get("status") == "done":
                per["screened"] += 1
                per["screen_pass"] += bool((scr.get("outputs") or {}).get("strict_pass"))
            state, cls = candidate_class(c["records"], chain)
            shortlisted = cid in sl
            per["shortlisted"] += shortlisted
            per["elastic_ready"] += state in ("elasticready", "pass_both")
            per["pass_both"] += state == "pass_both"
            if state == "not_shortlisted" and not shortlisted:
                per["not_shortlisted"] += 1
            elif state == "pending" or (state == "not_shortlisted" and shortlisted):
                per["pending"] += 1
            elif state == "running":
                per["running"] += 1
            if cls is not None and state not in ("pending", "running", "not_shortlisted"):
                classes[cls] += 1
            if shortlisted and state not in ("elasticready", "pass_both"):
                label = cls or ("converge: pending" if state == "not_shortlisted" else state)
                formula = c["candidate"].get("formula", "?")
                why = _last_message(c["records"], cls)
                out["shortlisted_not_ready"].append(f"{name}/{cid} ({formula}): {label}" + (f" ({why})" if why else ""))
            n_retried, n_changed, what = retries(c["records"])
            per["retried"] += n_retried
            per["retries_changed_outcome"] += n_changed
            out["retry_details"] += [f"{name}/{cid}: {w}" for w in what]
        out["per_set"][name] = dict(per)
        for k in ("generated", "screened", "screen_pass", "shortlisted", "elastic_ready", "pass_both", "not_shortlisted",
                  "pending", "running", "retried", "retries_changed_outcome"):
            out[k] += per[k]
    out["failure_classes"] = dict(sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])))
    pw = pw_runs(campaign)
    out["pw_calls"], out["core_hours"], out["pw_no_wall_line"] = pw["calls"], pw["core_hours"], pw["no_wall_line"]
    out["pw_reused"] = pw["reused"]
    out["pw_version_from_outputs"] = pw["version"]
    out["core_hours_per_validated_tensor"] = pw["core_hours"] / out["pass_both"] if out["pass_both"] else None
    out["core_hours_per_elastic_ready"] = pw["core_hours"] / out["elastic_ready"] if out["elastic_ready"] else None
    return out


# ------------------------------------------------------------------ machine
def machine() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model or platform.processor() or "?", "host": platform.node(),
            "python": platform.python_version()}


def pw_version() -> str:
    """pw.x's banner version (run with no input in a scratch folder, killed after the banner)."""
    exe = shutil.which("pw.x")
    if exe is None:
        return "pw.x not found"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            p = subprocess.run([exe], cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            text = p.stdout + p.stderr
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    m = re.search(r"Program PWSCF (v\.\S+)", text)
    return f"{m.group(1)} ({exe})" if m else f"? ({exe})"


# ------------------------------------------------------------------ apply
def aimmat_exe() -> list[str]:
    exe = Path(sys.executable).parent / "aimmat"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("aimmat")
    return [found] if found else [sys.executable, "-m", "aimmat.cli.main"]


def stray_processes(folder: Path) -> list[int]:
    """Pids of processes whose working folder is under ``folder`` (pw.x runs
    of this campaign: aimmat starts each in a session of its own, so killing
    apply's process group does not reach them)."""
    folder = str(folder.resolve())
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd == folder or cwd.startswith(folder + os.sep):
            pids.append(int(proc.name))
    return pids


def stop_strays(folder: Path) -> list[int]:
    """SIGTERM, then SIGKILL, the processes still running under ``folder``; their pids."""
    pids = stray_processes(folder)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
        pids_left = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not pids_left:
            break
    return pids


def run_apply(manifest_path: Path, jobs: int, log: Path, timeout_s: float | None, verbose: bool) -> tuple[int | None, float, bool]:
    """(exit code, wall seconds, timed out) of ``aimmat apply``; its output goes to ``log``."""
    cmd = aimmat_exe() + ["apply", str(manifest_path), "--jobs", str(jobs)]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if verbose else fh, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        timed_out = False
        if verbose:
            import threading

            def pump():
                for line in proc.stdout:
                    fh.write(line)
                    sys.stderr.write(line)
            threading.Thread(target=pump, daemon=True).start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            # SIGTERM, not SIGINT: a bench started in the background by a non-interactive shell hands
            # apply an ignored SIGINT, which apply leaves ignored (aimmat.runtime.stop)
            for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)  # the group of the apply started here (its pool and pw.x runs)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return proc.returncode, time.perf_counter() - t0, timed_out


def cli_status(manifest_path: Path) -> dict | None:
    p = subprocess.run(aimmat_exe() + ["status", str(manifest_path), "--json"], capture_output=True, text=True)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def status_check(st: dict, s: dict) -> str | None:
    """One line comparing ``aimmat status --json`` totals with the records' counts."""
    total = st.get("total") if isinstance(st, dict) else None
    if not isinstance(total, dict):
        return None
    mine = {"elasticready": s["elastic_ready"],
            "screened_out": sum(n for c, n in s["failure_classes"].items() if c.startswith("screen: screened_out")),
            "not_converged_settings": sum(n for c, n in s["failure_classes"].items() if c.endswith(": not_converged_settings"))}
    parts = []
    for k, v in mine.items():
        theirs = total.get(k)
        parts.append(f"{k} {theirs}" + ("" if theirs == v else f" (DISAGREES with records: {v})"))
    return "aimmat status --json: " + ", ".join(parts)


# ------------------------------------------------------------------ report
def _fmt(x, unit="") -> str:
    return "n/a" if x is None else f"{x:.3f}{unit}"


def print_report(s: dict, head: dict) -> None:
    print(f"date:     {head['date']}")
    m = head["machine"]
    print(f"machine:  {m['host']}: {m['cores']} cores, {m['cpu']}")
    print(f"pw.x:     {head['pw_version']}")
    print(f"command:  {head['command']}")
    print(f"manifest: {head['manifest']}")
    if head.get("apply_s") is not None:
        note = " (stopped at --apply-timeout-s)" if head.get("timed_out") else ""
        print(f"apply:    {head['apply_s']:.0f} s wall, exit {head['apply_rc']}{note}; log {head['log']}")
    if head.get("strays"):
        print(f"note:     {head['strays']}")
    print()
    print(f"candidates generated        {s['generated']} (of {s['expected']})")
    print(f"screened / passed           {s['screened']} / {s['screen_pass']}")
    print(f"shortlisted                 {s['shortlisted']}")
    print(f"elastic-ready               {s['elastic_ready']}")
    print(f"pass_both (fit RMS and PD)  {s['pass_both']}")
    print(f"not shortlisted             {s['not_shortlisted']}")
    print(f"pending (not run)           {s['pending']}")
    print(f"running                     {s['running']}")
    for name, per in s["per_set"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in per.items()))
    print()
    print("failure classes (one per candidate, first stage that stopped it):")
    for cls, n in s["failure_classes"].items():
        print(f"  {n:3d}  {cls}")
    if not s["failure_classes"]:
        print("  none")
    print()
    print(f"pw.x calls                  {s['pw_calls']} (pw.out files; {s['pw_no_wall_line']} without a WALL line;"
          f" {s.get('pw_reused', 0)} more read back after an interruption, not counted)")
    print(f"core-hours (WALL x ranks)   {_fmt(s['core_hours'])}")
    print(f"core-hours / validated tensor (pass_both)   {_fmt(s['core_hours_per_validated_tensor'])}")
    print(f"core-hours / elastic-ready tensor           {_fmt(s['core_hours_per_elastic_ready'])}")
    print(f"stage records retried       {s['retried']}; retries that changed the outcome {s['retries_changed_outcome']}")
    for line in s["retry_details"]:
        print(f"  {line}")
    print()
    print("shortlisted, not elastic-ready:")
    for line in s["shortlisted_not_ready"] or ["none"]:
        print(f"  {line}")
    if head.get("status_check"):
        print()
        print(head["status_check"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=4, help="candidates generated per set (default 4)")
    ap.add_argument("--top-k", type=int, default=1, help="shortlist per set (default 1)")
    ap.add_argument("--full", action="store_true", help=f"{FULL_COUNT} per set (30 in all), top_k {FULL_TOP_K}")
    ap.add_argument("--workdir", type=Path, help="folder for the manifest and campaign (default: a new temporary one)")
    ap.add_argument("--functional", default="lda", choices=["lda", "pbe", "pbesol"])
    ap.add_argument("--palette", default=",".join(DEFAULT_PALETTE), help="comma-separated elements")
    ap.add_argument("--preset", choices=["fast", "balanced", "stringent"], help="QE preset (default: none, profile defaults)")
    ap.add_argument("--walltime-s", type=float, default=900.0, help="walltime_s per pw.x run (default 900)")
    ap.add_argument("--max-kpoints", type=int, default=DEFAULT_MAX_KPOINTS,
                    help=f"converge stage's max_kpoints: the k ladder ends (not_converged_settings) before a mesh whose sheared "
                         f"probe has more irreducible k-points (default {DEFAULT_MAX_KPOINTS}; 40000 is pw.x's own limit)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-prerelax", action="store_true", help="plain screen, no CHGNet pre-relaxation")
    ap.add_argument("--apply-timeout-s", type=float, help="stop apply after this long (SIGTERM to its group) and summarize")
    ap.add_argument("--summarize-only", action="store_true", help="read --workdir's campaign; do not apply")
    ap.add_argument("--verbose", action="store_true", help="stream apply's progress to stderr")
    ap.add_argument("--json", action="store_true", help="also print the summary as JSON")
    a = ap.parse_args(argv)
    if a.full:
        a.count, a.top_k = FULL_COUNT, FULL_TOP_K
    palette = [e.strip() for e in a.palette.split(",") if e.strip()]
    if a.summarize_only and a.workdir is None:
        ap.error("--summarize-only needs --workdir")
    workdir = (a.workdir or Path(tempfile.mkdtemp(prefix="qe_campaign_"))).resolve()

    head = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "pw_version": pw_version(),
            "command": " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]) if argv is None
            else "qe_campaign.py " + " ".join(map(shlex.quote, argv))}
    mpath = workdir / "manifest.yaml"
    if a.summarize_only:
        manifest = yaml.safe_load(mpath.read_text())
    else:
        if a.workdir is None or not mpath.exists():
            try:  # the palette must be covered by the family for this functional
                from aimmat.resolve.palette import covered

                missing = sorted(set(palette) - covered(DEBIAN_PSEUDO, {}, a.functional))
                if missing:
                    ap.error(f"no {a.functional} pseudopotential in {DEBIAN_PSEUDO} for {', '.join(missing)}")
            except ImportError:
                pass
        manifest = build_manifest(count=a.count, top_k=a.top_k, palette=palette, functional=a.functional,
                                  preset=a.preset, walltime_s=a.walltime_s, prerelax=not a.no_prerelax,
                                  max_kpoints=a.max_kpoints)
        mpath = write_manifest(workdir, manifest)
    head["manifest"] = str(mpath)
    if not a.summarize_only:
        log = workdir / "apply.log"
        print(f"applying {mpath} (log: {log}) ...", file=sys.stderr, flush=True)
        rc, wall, timed_out = run_apply(mpath, a.jobs, log, a.apply_timeout_s, a.verbose)
        head.update(apply_rc=rc, apply_s=wall, timed_out=timed_out, log=str(log))
    campaign = workdir / manifest["campaign"]["root"] / manifest["campaign"]["name"]
    if not a.summarize_only and campaign.is_dir():
        strays = stop_strays(campaign)  # pw.x runs that outlived the stopped apply
        if strays:
            head["strays"] = f"stopped {len(strays)} process(es) left running under the campaign after apply: {strays}"
    s = summarize(campaign, manifest)
    st = cli_status(mpath)
    if st is not None:
        (workdir / "status.json").write_text(json.dumps(st, indent=1))
        head["status_check"] = status_check(st, s)
    if s["pw_version_from_outputs"]:
        head["pw_version"] += f"; pw.out says {s['pw_version_from_outputs']}"
    print_report(s, head)
    (workdir / "summary.json").write_text(json.dumps({"head": head, "summary": s}, indent=1, default=str))
    if a.json:
        print(json.dumps({"head": head, "summary": s}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
