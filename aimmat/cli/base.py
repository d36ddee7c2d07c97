"""The `aimmat` click group and the helpers every command module shares (manifest loading, targets, the
checked scan); the commands live in ``main``, ``model_cmds`` and ``outward``."""

from __future__ import annotations

import click

from aimmat import __version__
from aimmat.errors import UsageError

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


def _load(manifest: str, rescan: bool = False):
    """The manifest, its source files hashed through the campaign index's
    cache (``--rescan``: hash every file)."""
    from aimmat.manifest import load_manifest
    from aimmat.state.source_hashes import SourceHashes

    return load_manifest(manifest, source_hashes=lambda cdir: SourceHashes(cdir, rescan=rescan))
