"""`aimmat model train | eval | update`: the generator and elastic predictor checkpoints; registered on the
``aimmat`` group of ``aimmat.cli.main``."""

from __future__ import annotations

import os

import click

from aimmat.cli.base import _load, _scan_checked, cli

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
