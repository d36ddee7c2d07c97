"""Sampling crystals from the VAE: latent from the prior, atom count,
composition and lattice from the decoder, positions by annealed Langevin
dynamics with the score network.

Schedule: ``levels`` noise levels, geometric from sigma_max to sigma_min,
``steps`` Langevin steps each with step size lr * (sigma / sigma_min)^2
(NCSN, as CDVAE), then one denoising step x + sigma_min * out (Tweedie),
then ``separate`` (pairs closer than min_separation x the covalent radii
sum pushed apart; 0 disables it, as in the CDVAE comparison schedule).
CDVAE's schedule is 50 levels x 100 steps = 5,000 steps; ours defaults to
10 x 5 = 50 (see ``bench/sampler.py`` for the trade-off).

Composition with k elements (the candidate set's element count): the k
elements with the largest predicted fractions, each present at least once,
the atom count split by largest remainders of the renormalised fractions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from aimmat.model.graph import MAX_Z, batch_from_tensors, edge_vectors, lattice_from_params
from aimmat.model.vae import CrystalVAE, n_elements_onehot

CHUNK = 16  # samples per batch; fixed so that a sample never depends on the count
DEFAULT_SCHEDULE = {"levels": 10, "steps": 5, "step_lr": 1e-4, "min_separation": 0.5}
CDVAE_SCHEDULE = {"levels": 50, "steps": 100, "step_lr": 1e-4, "min_separation": 0.0}


def _covalent_radii() -> torch.Tensor:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
    from pymatgen.core.periodic_table import Element

    r = torch.full((MAX_Z + 1,), 1.0)
    for z in range(1, MAX_Z + 1):
        r[z] = CovalentRadius.radius.get(Element.from_Z(z).symbol, 1.0)
    return r


def separate(frac, lattice, species, n_atoms, factor: float, iters: int = 200):
    """Push apart pairs closer than ``factor`` x (sum of covalent radii).

    A physical prior applied after the last Langevin step: the score network
    of a small model sometimes lets two atoms collapse onto one site (each is
    pulled to the same clean position). Pairs within the bound move apart
    along their bond, half the overlap each, until none overlaps. Disclosed
    in ``aimmat model eval`` (validity with and without it). Written here:
    no library projects periodic structures onto a minimum-distance set.
    """
    radii = _covalent_radii()[species]
    cutoff = float(2 * factor * radii.max()) + 1e-3
    batch = torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms)
    inv = torch.linalg.inv(lattice)[batch]
    for _ in range(iters):
        b = batch_from_tensors(species, frac, lattice, n_atoms, cutoff)
        vec = edge_vectors(b)
        d = torch.linalg.norm(vec, dim=-1)
        over = (factor * (radii[b.edge_src] + radii[b.edge_dst]) - d).clamp(min=0)
        if len(over) == 0 or float(over.max()) < 1e-4:
            break
        disp = torch.zeros_like(b.pos)
        # each pair appears as (i, j) and (j, i): each side moves half the overlap
        disp.index_add_(0, b.edge_src, -0.5 * over[:, None] * vec / d[:, None])
        frac = torch.einsum("ni,nij->nj", b.pos + disp, inv) % 1.0
    return frac


def separate_structures(structures: list[Structure], factor: float) -> list[Structure]:
    """``separate`` applied to finished structures (the sampler's post-processing step on its own, so that
    an evaluation can report validity before and after it on the very same samples)."""
    if factor <= 0 or not structures:
        return list(structures)
    n_atoms = torch.tensor([len(s) for s in structures])
    species = torch.tensor([site.specie.Z for s in structures for site in s], dtype=torch.long)
    frac = torch.tensor(np.concatenate([s.frac_coords for s in structures]), dtype=torch.float32)
    lattice = torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=torch.float32)
    frac = separate(frac, lattice, species, n_atoms, factor).numpy()
    offs = np.cumsum([0] + n_atoms.tolist())
    return [Structure(s.lattice, s.species, frac[offs[k]:offs[k + 1]].astype(float)) for k, s in enumerate(structures)]


@dataclass
class Sample:
    structure: Structure
    index: int
    latent: list[float]


def _counts(frac: np.ndarray, n: int) -> np.ndarray:
    k = len(frac)
    base = np.ones(k, int)
    rest = n - k
    if rest > 0:
        share = frac / frac.sum() * n - 1
        share = np.clip(share, 0, None)
        share = share / share.sum() * rest if share.sum() > 0 else np.full(k, rest / k)
        fl = np.floor(share).astype(int)
        order = np.argsort(-(share - fl), kind="stable")
        fl[order[: rest - fl.sum()]] += 1
        base += fl
    return base


def decode_globals(vae: CrystalVAE, z: torch.Tensor, n_elements: int, gens: list[torch.Generator], palette=None):
    """Atom counts, species and lattices decoded from latents ``z``.

    ``palette``: atomic numbers the composition may use. The decoder's
    fractions of every other element are set to zero before the k largest
    are taken, so each sample is drawn within the palette (conditioned, not
    filtered afterwards: ``count`` samples stay ``count`` candidates).
    """
    cond = n_elements_onehot(torch.full((len(z),), n_elements))
    na_logits, comp_logits, lat_out = vae.decode_global(z, cond)
    na_logits = na_logits.clone()
    na_logits[:, :n_elements] = -math.inf  # at least one atom per element
    probs = torch.softmax(na_logits, -1)
    n_atoms = torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, gens)])
    comp = torch.softmax(comp_logits, -1).detach().numpy()
    comp[:, 0] = 0.0  # index 0 is not an element
    if palette is not None:
        keep = np.zeros(comp.shape[1], bool)
        keep[[z for z in palette if 0 < z < comp.shape[1]]] = True
        if keep.sum() < n_elements:
            raise ValueError(f"the palette has {int(keep.sum())} element(s) the model knows; {n_elements} are needed")
        # tiny floor: a palette element the decoder gives zero weight can still be chosen, in Z order
        comp = np.where(keep, comp + 1e-12, 0.0)
    species = []
    for row, n in zip(comp, n_atoms.tolist()):
        top = np.argsort(-row, kind="stable")[:n_elements]
        counts = _counts(row[top], n)
        species.append(np.repeat(top, counts))
    params = vae.lattice_from_output(lat_out, n_atoms)
    return n_atoms, species, lattice_from_params(params), cond


def guidance_score(z: torch.Tensor, guidance: dict) -> torch.Tensor:
    """(P,) score of latents ``z`` (P, d): sum of Gaussian kernels around the seek latents minus the
    same around the avoid latents (width ``bandwidth``, each sum weighted as recorded)."""
    h2 = 2 * float(guidance["bandwidth"]) ** 2
    out = torch.zeros(len(z), dtype=z.dtype)
    for key, sign in (("seek", 1.0), ("avoid", -1.0)):
        pts = torch.tensor(guidance.get(key) or [], dtype=z.dtype).reshape(-1, z.shape[1])
        if len(pts):
            out += sign * torch.exp(-torch.cdist(z, pts) ** 2 / h2).sum(-1)
    return out


def draw_latents(latent_dim: int, gens: list[torch.Generator], guidance: dict | None = None) -> torch.Tensor:
    """One latent per sample stream. Without guidance: one draw from the prior N(0, I). With a learning
    cycle's ``guidance`` ({"proposals": P, "bandwidth": h, "seek": [...], "avoid": [...]}): P prior draws
    from the sample's own stream, and the one ``guidance_score`` ranks first (ties: the first drawn) is
    kept, so generation leans toward the neighbourhoods of pass_both outcomes and away from failures
    while sample i still depends only on (checkpoint, seed, i). A discrete importance re-weighting of
    the prior, written here because the VAE's prior is ours."""
    p = int(guidance["proposals"]) if guidance else 1
    out = []
    for g in gens:
        props = torch.randn(p, latent_dim, generator=g)
        out.append(props[0] if p == 1 else props[int(torch.argmax(guidance_score(props, guidance)))])
    return torch.stack(out)


def _sample_generator(seed: int, index: int) -> torch.Generator:
    # one stream per (seed, index): sample i is the same whatever the count,
    # so raising a set's count keeps every candidate generated before
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2 ** 63))


@torch.no_grad()
def sample(vae: CrystalVAE, count: int, n_elements: int, seed: int, schedule: dict | None = None,
           progress=None, indices=None, palette=None, guidance: dict | None = None) -> list[Sample]:
    """Crystals with ``n_elements`` elements (``indices`` defaults to 0 .. count-1).

    Sample i depends only on (seed, i): each has its own random stream, and
    samples are always computed in the same fixed chunks of CHUNK indices
    (float sums inside a batch depend on its members, and Langevin dynamics
    amplify such differences). ``palette``: atomic numbers the samples may
    contain (None: any the model knows). ``guidance``: a learning cycle's
    latent re-weighting (``draw_latents``), recorded in the checkpoint.
    """
    sch = {**DEFAULT_SCHEDULE, **(schedule or {})}
    indices = list(range(count)) if indices is None else [int(i) for i in indices]
    wanted = set(indices)
    found: dict[int, Sample] = {}
    for chunk in sorted({i // CHUNK for i in indices}):
        for smp in _sample_chunk(vae, list(range(chunk * CHUNK, (chunk + 1) * CHUNK)), n_elements, seed, sch, palette,
                                 guidance):
            if smp.index in wanted:
                found[smp.index] = smp
        if progress:
            progress(len(found), len(wanted))
    return [found[i] for i in indices]


def _sample_chunk(vae: CrystalVAE, idx: list[int], n_elements: int, seed: int, sch: dict, palette=None,
                  guidance: dict | None = None) -> list[Sample]:
    out: list[Sample] = []
    sigmas = np.geomspace(vae.sigma_max, vae.sigma_min, int(sch["levels"]))
    gens = [_sample_generator(seed, i) for i in idx]
    m = len(idx)
    z = draw_latents(vae.latent_dim, gens, guidance)
    n_atoms, species, lattice, cond = decode_globals(vae, z, n_elements, gens, palette)
    sp = torch.as_tensor(np.concatenate(species), dtype=torch.long)
    frac = torch.cat([torch.rand(int(n), 3, generator=g) for g, n in zip(gens, n_atoms)])
    batch = torch.repeat_interleave(torch.arange(m), n_atoms)
    inv = torch.linalg.inv(lattice)[batch]

    def noise_like():
        return torch.cat([torch.randn(int(n), 3, generator=g) for g, n in zip(gens, n_atoms)])

    for sigma in sigmas:
        step = sch["step_lr"] * (sigma / vae.sigma_min) ** 2
        sig = torch.full((m,), float(sigma))
        for _ in range(int(sch["steps"])):
            b = batch_from_tensors(sp, frac, lattice, n_atoms, vae.cutoff)
            score = vae.score_fn(b, z, cond, sig) / sigma
            pos = b.pos + step * score + math.sqrt(2 * step) * noise_like()
            frac = torch.einsum("ni,nij->nj", pos, inv) % 1.0
    b = batch_from_tensors(sp, frac, lattice, n_atoms, vae.cutoff)
    sig = torch.full((m,), float(vae.sigma_min))
    pos = b.pos + vae.sigma_min * vae.score_fn(b, z, cond, sig)  # Tweedie denoising step
    frac = torch.einsum("ni,nij->nj", pos, inv) % 1.0
    if sch.get("min_separation", 0.0) > 0:
        frac = separate(frac, lattice, sp, n_atoms, float(sch["min_separation"]))
    frac = frac.numpy()
    offs = np.cumsum([0] + n_atoms.tolist())
    for k in range(m):
        s = Structure(Lattice(lattice[k].numpy().astype(float)), [int(x) for x in species[k]],
                      frac[offs[k]:offs[k + 1]].astype(float))
        out.append(Sample(s, idx[k], z[k].tolist()))
    return out

