"""Plan: a pure function of spec and records, with reasons for every action."""

from aimmat.plan.plan import Action, Plan, StageAction, plan, plan_candidate

__all__ = ["Action", "Plan", "StageAction", "plan", "plan_candidate"]
