"""Desired state: manifest models, YAML loading, canonical hashing."""

from aimmat.manifest.load import CampaignSpec, load_manifest

__all__ = ["CampaignSpec", "load_manifest"]
