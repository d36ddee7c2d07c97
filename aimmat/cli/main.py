"""`aimmat` command: parse arguments, format output, map errors to exit codes.

Results (plans, JSON) go to stdout; messages and progress to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from aimmat import __version__
from aimmat.errors import EXIT_CHANGES_PENDING, EXIT_FAILED_STAGES, AimmatError, CampaignError, UsageError

_DEBUG = False


def _parse_target(value: str | None):
    if not value:
        return None
    parts = value.strip("/").split("/")
    if len(parts) > 2 or not parts[0]:
        raise UsageError(f"--target '{value}': expected SET or SET/CANDIDATE")
    return (parts[0], parts[1] if len(parts) == 2 else None)


def _check_target(spec, target) -> None:
    if target is None:
        return
    if target[0] not in spec.sets():
        raise UsageError(f"--target: no candidate set '{target[0]}' in {spec.path} (sets: {', '.join(spec.sets())})")
    if target[1] and not any(c.set_name == target[0] and c.cand_id == target[1] for c in spec.candidates):
        raise UsageError(f"--target: no candidate '{target[1]}' in set '{target[0]}'")


def _scan_checked(spec, rescan: bool = False, target=None):
    """The campaign folder's scan; every damaged record and symlink of a
    candidate in scope is one error (exit 4), the others warnings on stderr."""
    from aimmat.state.scan import check_observed, scan

    observed = scan(spec.campaign_dir, rescan=rescan)
    _warn(check_observed(observed, ((c.set_name, c.cand_id) for c in spec.candidates), target))
    return observed


def _warn(lines) -> None:
    for line in lines:
        click.echo(line, err=True)


def _check_replace(spec, replace) -> frozenset[str]:
    for st in replace:
        if st != "import" and st not in spec.stages:
            raise UsageError(f"--replace {st}: stage not enabled in the manifest (enabled: {', '.join(['import'] + spec.stages)})")
    return frozenset(replace)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aimmat")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def cli(debug: bool) -> None:
    """AI-driven materials-discovery campaigns as declared state."""
    global _DEBUG
    _DEBUG = debug


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the manifest."""
    from aimmat.manifest.models import manifest_model

    click.echo(json.dumps(manifest_model().model_json_schema(), indent=2))


def _load(manifest: str, rescan: bool = False):
    """The manifest, its source files hashed through the campaign index's
    cache (``--rescan``: hash every file)."""
    from aimmat.manifest import load_manifest
    from aimmat.state.source_hashes import SourceHashes

    return load_manifest(manifest, source_hashes=lambda cdir: SourceHashes(cdir, rescan=rescan))


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--exit-code", is_flag=True, help="Exit 10 when changes are pending, 0 when none.")
@click.option("--target", help="Restrict to SET or SET/CANDIDATE.")
@click.option("--replace", multiple=True, help="Show STAGE as forced to rerun.")
@click.option("-v", "--verbose", is_flag=True, help="List kept stages too.")
@click.option("--rescan", is_flag=True, help="Ignore the record index and read every record file (the index is refreshed by the next apply).")
def diff(manifest, as_json, exit_code, target, replace, verbose, rescan) -> None:
    """Show what differs between MANIFEST and its campaign folder, and why. Writes nothing."""
    from aimmat.apply.prepare import prepare
    from aimmat.plan import plan
    from aimmat.plan.show import format_plan
    from aimmat.runtime.gcpause import gc_paused

    spec = _load(manifest, rescan)
    tgt = _parse_target(target)
    _check_target(spec, tgt)
    observed = _scan_checked(spec, rescan, tgt)
    # new structure files are parsed here too (a bad one is exit 3); generated ones are not sampled
    prepared = prepare(spec, observed, generate=False, progress=False)
    with gc_paused():
        p = plan(prepared.resolved, observed, replace=_check_replace(spec, replace), target=tgt)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1))
    else:
        pal = prepared.resolved.palette
        if pal is not None and pal.elements is not None:
            click.echo(pal.describe())
        click.echo(format_plan(p, verbose=verbose))
        if spec.manifest.publish is not None and tgt is None:
            click.echo(_publish_summary(spec, observed, verbose))
    if exit_code and p.has_changes:
        sys.exit(EXIT_CHANGES_PENDING)


def _publish_summary(spec, observed, verbose: bool) -> str:
    """diff's publish section: per contribution create / rerun (payload changed) / keep (uploaded as it is)."""
    from aimmat.export import publish as pub

    acts = pub.actions(spec, pub.build(spec, observed))
    counts = {a: sum(1 for x, _, _ in acts if x == a) for a in ("create", "rerun", "keep")}
    lines = [f"publish (MPContribs project {spec.manifest.publish.project}, scope {spec.manifest.publish.scope}): "
             f"{counts['create']} to create, {counts['rerun']} to rerun (payload changed), {counts['keep']} to keep "
             "(`aimmat publish` uploads; not counted by --exit-code)"]
    if verbose:
        lines += [f"  {a:6s} {p.relpath}" for a, p, _ in acts]
    return "\n".join(lines)


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=lambda: os.cpu_count() or 1, show_default="number of cores", help="Stage tasks run at once (local process pool when > 1; 1 runs in this process). Ignored with `executor: {kind: parsl}`: the executor block sets the workers.")
@click.option("--target", help="Restrict to SET or SET/CANDIDATE.")
@click.option("--replace", multiple=True, help="Force STAGE to rerun (repeatable).")
@click.option("--prune", is_flag=True, help="Delete orphans (folders not in the manifest).")
@click.option("--cores", type=click.IntRange(1, 4096), default=None, help="Core slots for engine processes (pw.x ranks) across all jobs [default: number of cores].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--rescan", is_flag=True, help="Hash every source file and read every record file; rebuild the record index.")
def apply(manifest, jobs, target, replace, prune, cores, quiet, rescan) -> None:
    """Make the campaign folder match MANIFEST."""
    from aimmat.apply.executor import apply as run_apply
    from aimmat.plan.show import summary_line

    spec = _load(manifest, rescan)
    tgt = _parse_target(target)
    _check_target(spec, tgt)
    summary, final = run_apply(spec, jobs=jobs, target=tgt, replace=_check_replace(spec, replace), prune=prune,
                               progress=not quiet, cores=cores, render_command=["aimmat", "apply", manifest],
                               rescan=rescan)
    _warn(summary.warnings)
    if summary.n_ran == 0 and not summary.pruned:
        click.echo(f"Nothing to do: {summary.kept} stages up to date" + (f", {summary.blocked} blocked." if summary.blocked else "."))
    else:
        ran = ", ".join(f"{st} {status} {n}" for (st, status), n in sorted(summary.ran.items()))
        click.echo(f"Applied in {summary.wall_s:.1f} s: {summary.n_ran} stage task(s) run ({ran}).")
    for p in summary.pruned:
        click.echo(f"  pruned {p}")
    for f in summary.failed:
        if f in summary.io_failed:
            click.echo(f"  failed {f.set_name}/{f.cand_id} {f.stage}: {f.failure_code}: {f.message}", err=True)
        else:
            click.echo(f"  failed {f.set_name}/{f.cand_id} {f.stage}: {f.failure_code} after {f.attempts} attempt(s)", err=True)
    orphans = final.orphans
    if orphans:
        click.echo(f"  {len(orphans)} orphan(s) left in place; `aimmat apply --prune` removes them.", err=True)
    click.echo(summary_line(final))
    if summary.rendered is not None:
        click.echo(f"Rendered {len(summary.rendered['outputs'])} output(s) into {spec.campaign_dir / 'manuscript'}")
    if summary.io_failed:
        click.echo(f"error: {len(summary.io_failed)} stage task(s) could not read or write the campaign folder (see the "
                   "`failed` lines above); the other candidates were applied\n  fix: repair those paths (permissions, "
                   "a file or symlink where a folder should be, free space), then run `aimmat apply` again", err=True)
        sys.exit(CampaignError.exit_code)
    failed_now = [a for a in final.actions if a.state == "failed"]
    if failed_now:
        sys.exit(EXIT_FAILED_STAGES)


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print status as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="One line per candidate.")
@click.option("--rescan", is_flag=True, help="Ignore the record index and read every record file (the index is refreshed by the next apply).")
def status(manifest, as_json, verbose, rescan) -> None:
    """Candidates by status, per candidate set. Writes nothing."""
    from aimmat.state.show import format_status, status_table

    spec = _load(manifest, rescan)
    observed = _scan_checked(spec, rescan)
    from aimmat.resolve.palette import campaign_palette
    from aimmat.state.summary import SEP

    pal = campaign_palette(spec)
    table = status_table(spec, observed, outside=lambda sp: pal.outside(sp.split(SEP)) if sp else [])
    if spec.manifest.milestones or spec.manifest.evidence.triage is not None:  # from the snapshot, as the report shows them
        from aimmat.evidence.snapshot import snapshot

        scopes = snapshot(spec, observed)["scopes"]
        table["milestones"] = [m for scope in ("public", "screening", "validated") for m in scopes[scope]["milestones"]]
        table["triage"] = scopes["screening"]["triage"]
    click.echo(json.dumps(table, indent=1) if as_json else format_status(table, verbose=verbose))


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--rescan", is_flag=True, help="Ignore the record index and read every record file.")
def evidence(manifest, rescan) -> None:
    """Print the scope-separated evidence snapshot (JSON) computed from records. Writes nothing."""
    from aimmat.evidence.snapshot import snapshot

    spec = _load(manifest, rescan)
    observed = _scan_checked(spec, rescan)
    click.echo(json.dumps(snapshot(spec, observed), indent=1, sort_keys=True))


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
def render(manifest) -> None:
    """Render the manifest's tables from the evidence snapshot into <campaign>/manuscript/ (apply's render step alone)."""
    from aimmat.apply.render_step import render as do_render

    spec = _load(manifest)
    lock = do_render(spec, command=["aimmat", "render", manifest])
    for o in lock["outputs"]:
        click.echo(f"{o['path']}  ({o['scope']}, sha256 {o['sha256'][:12]})")
    click.echo(f"manuscript/render.lock.json; snapshot sha256 {lock['snapshot_sha256'][:12]}")


@cli.group()
def export() -> None:
    """Packages made from a campaign's records for people outside it."""


@export.command("handoff")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.argument("target")
@click.option("--zip", "as_zip", is_flag=True, help="Also write <package>.zip (fixed time stamps: same records, same bytes).")
@click.option("--partial", is_flag=True, help="Export a candidate that is not elastic-ready (what it has).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write OUT/<set>-<candidate>/ instead of <campaign>/handoff/<set>/<candidate>/.")
def export_handoff(manifest, target, as_zip, partial, out) -> None:
    """Structures (CIF, POSCAR, pymatgen JSON), predicted and computed properties, every stage's inputs and
    outputs, the elastic fit with its gates, a generated rationale and SHA256SUMS for SET/CANDIDATE."""
    from aimmat.export import handoff
    from aimmat.state.lock import CampaignLock

    parsed = _parse_target(target)
    if parsed is None or parsed[1] is None:
        raise UsageError(f"'{target}' is not SET/CANDIDATE", fix="name one candidate, e.g. 2-element/MgO")
    spec = _load(manifest)
    _check_target(spec, parsed)
    observed = _scan_checked(spec, target=parsed)
    files = handoff.build(spec, observed, parsed[0], parsed[1], partial=partial)
    dest = handoff.destination(spec, parsed[0], parsed[1], out)
    if out is None:
        with CampaignLock(spec.campaign_dir):
            zpath = handoff.write(dest, files, as_zip)
    else:
        zpath = handoff.write(dest, files, as_zip)
    size = sum(len(d) for _, d in files)
    click.echo(f"wrote {dest}/ ({len(files)} files, {size / 1e6:.2f} MB; check: cd {dest} && sha256sum -c SHA256SUMS)")
    if zpath is not None:
        click.echo(f"wrote {zpath}")


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Write the payloads under <campaign>/publish/payloads/ and validate them; upload nothing.")
def publish(manifest, dry_run) -> None:
    """Publish the manifest's `publish:` candidates to MPContribs: new and changed payloads only, one publish
    record per confirmed upload; the API key comes from the environment variable the block names."""
    from aimmat.export import publish as pub
    from aimmat.state.lock import CampaignLock

    spec = _load(manifest)
    if spec.manifest.publish is None:
        raise UsageError(f"{manifest}: no `publish:` block", fix="declare publish: {project: NAME, scope: validated}")
    if not spec.campaign_dir.is_dir():
        raise CampaignError(f"{spec.campaign_dir} does not exist: nothing to publish", fix=f"aimmat apply {manifest} first")
    observed = _scan_checked(spec)
    payloads = pub.build(spec, observed)
    problems = [(p, why) for p in payloads for why in pub.validate(p)]
    if problems:
        raise pub.PayloadError(f"{len(problems)} problem(s) in the MPContribs payloads (nothing written or uploaded):\n"
                               + "\n".join(f"  {p.relpath}: {why}" for p, why in problems))
    acts = pub.actions(spec, payloads)
    counts = {a: sum(1 for x, _, _ in acts if x == a) for a in ("create", "rerun", "keep")}
    todo = [x for x in acts if x[0] != "keep"]
    client = pub.client_for(spec) if not dry_run and todo else None  # no key, no host: nothing written
    with CampaignLock(spec.campaign_dir):
        paths = pub.write_payloads(spec, payloads)
        if dry_run:
            for a, p, _ in acts:
                click.echo(f"  {a:6s} {p.relpath}  ({p.body['identifier']}, sha256 {p.sha256[:12]})")
            click.echo(f"dry run: {len(paths)} payload(s) written under {spec.campaign_dir / 'publish' / 'payloads'} and "
                       f"validated with mpcontribs-client's checks; {counts['create']} to create, {counts['rerun']} to "
                       f"update, {counts['keep']} unchanged; nothing uploaded")
            return
        if not todo:
            click.echo(f"nothing to upload: {counts['keep']} contribution(s) unchanged since they were published")
            return
        written, failed = pub.upload(spec, todo, client)
    for r in written:
        click.echo(f"  {r['action']:6s} {r['candidate']}  -> {r['remote_id']}")
    click.echo(f"published {len(written)} of {len(todo)} ({counts['keep']} unchanged, not uploaded again)")
    if failed:
        for p, why in failed:
            click.echo(f"error: {p.relpath}: upload failed: {why}", err=True)
        click.echo("  fix: the other publish records are written; run `aimmat publish` again to retry the failed ones",
                   err=True)
        sys.exit(EXIT_FAILED_STAGES)


@cli.group()
def waves() -> None:
    """Pre-registered rerun waves (the manifest's `waves:`)."""


@waves.command("freeze")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.argument("wave")
def waves_freeze(manifest, wave) -> None:
    """Record WAVE's policy hash and the candidates it selects now, with the time, in <campaign>/waves/WAVE.json.
    Apply runs only frozen waves, and refuses one whose policy changed after freezing."""
    from aimmat.state import waves as w
    from aimmat.state.lock import CampaignLock

    spec = _load(manifest)
    if not spec.campaign_dir.is_dir():
        raise CampaignError(f"{spec.campaign_dir} does not exist: a wave selects from records", fix=f"aimmat apply {manifest} first")
    observed = _scan_checked(spec)
    with CampaignLock(spec.campaign_dir):
        rec, written = w.freeze(spec, observed, wave)
    head = "froze" if written else "already frozen (same policy), unchanged:"
    click.echo(f"{head} wave {wave} (policy {rec['policy_sha256'][:12]}, {rec['frozen_at']}): "
               f"{len(rec['selected'])} candidate(s), intervention: {rec['intervention']}")
    for r in rec["selected"]:
        why = r["failure_code"] or r["status"]
        click.echo(f"  {r['candidate']:28s} {r['stage']:8s} {why}" + (f"  score {r['score']:.3f}" if r["score"] is not None else ""))


@cli.command("slurm-script")
@click.argument("manifest", type=click.Path(dir_okay=False))
def slurm_script_cmd(manifest) -> None:
    """Print the Slurm job script Parsl would submit for one block of MANIFEST's
    executor (`kind: parsl`, `provider: slurm`). Runs no Slurm command and writes nothing."""
    from aimmat.apply.parsl import slurm_script

    spec = _load(manifest)
    ex = spec.manifest.executor
    if ex.kind != "parsl" or ex.provider != "slurm":
        raise UsageError(f"{manifest}: executor is not `kind: parsl` with `provider: slurm`")
    click.echo(slurm_script(spec), nl=False)


@cli.group()
def model() -> None:
    """Train and evaluate the generator and elastic-predictor checkpoint."""


def _default_data_root() -> str | None:
    return os.environ.get("AIMMAT_SHARED_DATA")


@model.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Checkpoint file to write.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder of the reference data (default: $AIMMAT_SHARED_DATA, else the config's data_root).")
@click.option("--generator-from", type=click.Path(dir_okay=False), default=None,
              help="Reuse the VAE of this checkpoint (refused unless it was trained from the same generator "
                   "section, seed and data files) and train the elastic heads only.")
def model_train(config, out, data_root, generator_from) -> None:
    """Train from CONFIG (YAML): elastic heads (PD and ablation) and the crystal VAE."""
    from pathlib import Path

    from aimmat.model import train

    r = train.run(Path(config), Path(out), data_root, Path(generator_from) if generator_from else None)
    click.echo(f"{r['path']}  sha256 {r['sha256']}")


@model.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data-root", type=click.Path(file_okay=False), default=_default_data_root,
              help="Reference data folder (default: $AIMMAT_SHARED_DATA, else ../shared/data next to the project).")
@click.option("-n", "--samples", type=click.IntRange(1, 100000), default=10_000, show_default=True,
              help="Structures to generate for the generation metrics (CDVAE's protocol: 10,000; fewer are "
                   "labelled not comparable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON file to write (default: CHECKPOINT with .eval.json).")
@click.option("--no-generation", is_flag=True, help="Elastic metrics only.")
@click.option("--speed-count", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Samples per schedule for the speed comparison against CDVAE's 5,000-step schedule "
                   "(fewer than 100 are labelled not comparable).")
def model_eval(checkpoint, data_root, samples, seed, out, no_generation, speed_count) -> None:
    """Evaluate CHECKPOINT: elastic heads on the held-out split, generation (CDVAE protocol)."""
    from pathlib import Path

    from aimmat.model import evaluate

    if data_root is None:
        guess = Path(__file__).resolve().parents[2].parent / "shared" / "data"
        data_root = str(guess) if guess.exists() else None
    outp = Path(out) if out else Path(checkpoint).with_suffix(".eval.json")
    r = evaluate.run(Path(checkpoint), data_root=Path(data_root) if data_root else None, n_samples=samples,
                     seed=seed, out=outp, skip_generation=no_generation, speed_count=speed_count)
    click.echo(evaluate.report(r))
    click.echo(f"wrote {outp}")


@model.command("update")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Fine-tuning seed (recorded).")
@click.option("--replace", is_flag=True, help="Overwrite the cycle's checkpoint when its inputs changed.")
def model_update(manifest, seed, replace) -> None:
    """Run MANIFEST's `learning:` cycle: fine-tune the parent's elastic head on the campaign's validated
    tensors, re-weight generation by its outcomes, keep the hashed holdout out; write
    <campaign>/learning/<name>/checkpoint.pt and record.json. Unchanged inputs write nothing."""
    from aimmat.candidates import learning as learn

    spec = _load(manifest)
    observed = _scan_checked(spec)
    r = learn.update(spec, observed, seed=seed, replace=replace)
    lc = spec.manifest.learning

    def fig(d):
        if not d or not d.get("n"):
            return "no tensors"
        return f"log10 K MAE {d['mae_log10_kvrh']:.3f}, log10 G MAE {d['mae_log10_gvrh']:.3f} (n={d['n']})"

    lf = r["learned_from"]
    click.echo(f"learning cycle {r['name']}: {r['status'].replace('_', ' ')}")
    click.echo(f"  parent   {r['parent_sha256']}")
    click.echo(f"  child    {r['child_sha256']}  ({spec.campaign_dir / r['checkpoint']})")
    click.echo(f"  learned from: {len(lf['tensors'])} tensor(s), {len(lf['seek'])} seek and {len(lf['avoid'])} avoid "
               f"latent(s); held out: {len(r['holdout'])} candidate(s)")
    click.echo(f"  holdout before: {fig(r['holdout_before'])}")
    click.echo(f"  holdout after:  {fig(r['holdout_after'])}")
    click.echo(f"  training tensors before / after: {fig(r['train_before'])} / {fig(r['train_after'])}")
    rel = os.path.relpath(spec.campaign_dir / r["checkpoint"], spec.base)
    click.echo(f"pin it in the manifest:\n  models:\n    {lc.name}:\n      path: {rel}\n      sha256: {r['child_sha256']}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    global _DEBUG
    _DEBUG = False
    try:
        cli.main(args=argv, prog_name="aimmat", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Abort:  # click's form of a KeyboardInterrupt (Ctrl-C, SIGTERM during apply)
        click.echo("interrupted; run `aimmat apply` again to resume", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except AimmatError as exc:
        if _DEBUG:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted; run `aimmat apply` again to resume", err=True)
        return 130
    except OSError as exc:  # a file system problem no command turned into an AimmatError
        if _DEBUG:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}\n  fix: check that path (permissions, a file or symlink where a "
                   "folder should be, free space) and run the command again", err=True)
        return CampaignError.exit_code
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
