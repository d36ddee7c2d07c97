"""Process-wide runtime helpers below every layer: core slots, garbage-collector pauses."""
