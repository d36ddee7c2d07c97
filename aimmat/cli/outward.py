"""CLI commands that make things for people outside the campaign (publish, export handoff) and pre-register
rerun waves; registered on the ``aimmat`` group of ``aimmat.cli.main``."""

from __future__ import annotations

import sys

import click

from aimmat.cli.base import _check_target, _load, _parse_target, _scan_checked, cli
from aimmat.errors import EXIT_FAILED_STAGES, CampaignError, UsageError

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
