"""Evidence: a scope-separated snapshot computed from records only."""
