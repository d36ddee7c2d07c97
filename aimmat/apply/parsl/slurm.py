"""The Slurm job script Parsl would submit, rendered without Slurm.

``python -m aimmat.apply.parsl.slurm MANIFEST`` prints it, like
``aimmat slurm-script MANIFEST``; this module does not import the CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aimmat.apply.parsl.config import LABEL, _htex, _slurm_kwargs, run_dir
from aimmat.errors import AimmatError, UsageError
from aimmat.manifest.executor_spec import ParslExecutorSpec


def _preview_provider(ex: ParslExecutorSpec):
    """A SlurmProvider that runs no command and keeps the script it would sbatch."""
    from string import Template

    from parsl.providers import SlurmProvider

    class PreviewSlurm(SlurmProvider):
        """Runs no command: captures the script that submit() would sbatch."""

        script = None

        def execute_wait(self, cmd, timeout=None):
            if cmd.startswith("sbatch "):
                return 0, "Submitted batch job 0", ""
            return 1, "", "preview: no Slurm commands run"

        def _write_submit_script(self, template, script_filename, job_name, configs):
            self.script = Template(template).substitute(jobname=job_name, **configs)

    return PreviewSlurm(**_slurm_kwargs(ex))


def slurm_script(spec, campaign_dir: Path | None = None) -> str:
    """The sbatch script Parsl would submit for one block of ``spec``'s executor.

    The worker port and run number are only known once apply starts; they
    appear as ``<port>`` and ``NNN``. Runs no Slurm command, writes nothing.

    Parameters
    ----------
    spec : CampaignSpec or ParslExecutorSpec
        A loaded manifest, or its executor block together with ``campaign_dir``.
    campaign_dir : Path, optional
        The campaign folder; needed only when ``spec`` is an executor block.

    Returns
    -------
    str
        The job script text.

    Raises
    ------
    ValueError
        The executor is not ``kind: parsl`` with ``provider: slurm``.
    """
    ex = spec.manifest.executor if hasattr(spec, "manifest") else spec
    cdir = Path(spec.campaign_dir if hasattr(spec, "manifest") else campaign_dir)
    if not isinstance(ex, ParslExecutorSpec) or ex.provider != "slurm":
        raise ValueError("slurm_script needs an executor block with kind: parsl and provider: slurm")
    provider = _preview_provider(ex)
    htex = _htex(ex, provider)
    run = run_dir(cdir) / "NNN"
    htex.run_dir = str(run)
    htex.worker_port = "<port>"
    htex.cert_dir = str(run / LABEL / "certificates")
    htex.logconf_path = None
    htex.initialize_scaling()
    provider.script_dir = str(run / "submit_scripts")
    provider.submit(htex._get_launch_command("0"), 1, f"parsl.{LABEL}.block-0")
    return provider.script


def main(argv: list[str] | None = None) -> int:
    """``python -m aimmat.apply.parsl.slurm MANIFEST``: print MANIFEST's Slurm job script.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the module name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0; 2 when the executor is not ``kind: parsl`` with ``provider: slurm``
        (or the arguments are wrong); an ``AimmatError``'s exit code otherwise.
    """
    from aimmat.manifest import load_manifest

    parser = argparse.ArgumentParser(prog="python -m aimmat.apply.parsl.slurm", description=main.__doc__.splitlines()[0])
    parser.add_argument("manifest")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return int(exc.code or 0)
    try:
        spec = load_manifest(args.manifest)
        ex = spec.manifest.executor
        if ex.kind != "parsl" or ex.provider != "slurm":
            # the wording and exit code (2) of `aimmat slurm-script`
            raise UsageError(f"{args.manifest}: executor is not `kind: parsl` with `provider: slurm`")
        sys.stdout.write(slurm_script(spec))
    except AimmatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
