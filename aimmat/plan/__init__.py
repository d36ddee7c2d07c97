"""Plan: a pure function of (resolved campaign, observed state), with reasons for every action."""

from aimmat.plan.actions import Action, Plan, StageAction
from aimmat.plan.candidate import plan_candidate
from aimmat.plan.plan import plan

__all__ = ["Action", "Plan", "StageAction", "plan", "plan_candidate"]
