"""Process-wide resources that engines and the executor share.

This package sits below ``aimmat.engines`` and ``aimmat.apply``: engines hold
core slots while their processes run, the executor creates those slots
before it forks workers. It imports neither.
"""
