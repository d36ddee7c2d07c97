"""`aimmat` command: parse arguments, format output, map errors to exit codes.

Results (plans, JSON) go to stdout; messages and progress to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from aimmat.cli import base
from aimmat.cli.base import _check_replace, _check_target, _load, _parse_target, _scan_checked, _warn, cli
from aimmat.errors import EXIT_CHANGES_PENDING, EXIT_FAILED_STAGES, AimmatError, CampaignError, UsageError


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the manifest."""
    from aimmat.manifest.models import manifest_model

    click.echo(json.dumps(manifest_model().model_json_schema(), indent=2))


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
            from aimmat.cli.outward import _publish_summary

            click.echo(_publish_summary(spec, observed, verbose))
    if exit_code and p.has_changes:
        sys.exit(EXIT_CHANGES_PENDING)


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


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    base._DEBUG = False
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
        if base._DEBUG:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted; run `aimmat apply` again to resume", err=True)
        return 130
    except OSError as exc:  # a file system problem no command turned into an AimmatError
        if base._DEBUG:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}\n  fix: check that path (permissions, a file or symlink where a "
                   "folder should be, free space) and run the command again", err=True)
        return CampaignError.exit_code
    return 0


# the command groups kept in their own modules register on `cli` when imported
from aimmat.cli import model_cmds, outward  # noqa: E402,F401


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
