"""Which INT8 variant ships: the fastest one whose accuracy stays within budget of the FP32 teacher.

Pure decision logic (no I/O), so the rule is tested on synthetic numbers and explained in one place.
The inputs are measured on the same rows as the teacher (paired): ``delta_points`` is the variant's
accuracy minus the teacher's, in points, and ``ci_low_points`` the low end of its 95% paired bootstrap
interval. A variant meets the budget when its point estimate is within it; the interval is reported
next to the choice so a reader sees how sure the choice is, and ``require_ci`` makes the rule strict
(the whole interval's low end within budget) for teams that want it. ``ci_floor_points`` is a looser
guard that is on by default in the pipeline: a variant whose interval reaches further below the teacher
than the validation's accuracy gate allows (its low end under -floor) could plausibly fail that gate on
the test split, so it is not chosen however good its point estimate. Seen on debian-sections (BENCHMARKS.md
section 6): a 3-layer student at +0.24 on eval but [-1.13, +1.66] (84% agreement) was -1.58 on test.

Preference when several meet the budget: the fastest (relative speed), and among variants whose speeds are
within ``speed_tolerance`` of each other the cheapest to produce (PTQ before KD-QAT before KD-QAT with
layers kept in higher precision), then the more accurate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VariantKind = Literal["ptq", "kd_qat", "kd_qat_mixed_precision", "smaller_student"]
PRODUCTION_COST = {"ptq": 0, "kd_qat": 1, "smaller_student": 2, "kd_qat_mixed_precision": 3}


@dataclass(frozen=True)
class VariantScore:
    name: str
    kind: VariantKind
    delta_points: float
    ci_low_points: float
    relative_speed: float
    """Expected speed relative to the full-size INT8 engine (higher is faster)."""


@dataclass(frozen=True)
class Choice:
    chosen: VariantScore | None
    reasons: list[str]
    """One line per variant and the verdict: what was chosen and why, or why nothing was."""


def choose_variant(
    variants: list[VariantScore],
    budget_points: float = 0.3,
    *,
    require_ci: bool = False,
    ci_floor_points: float | None = None,
    speed_tolerance: float = 0.03,
) -> Choice:
    if budget_points < 0:
        raise ValueError(f"budget_points must be >= 0, got {budget_points}")
    if ci_floor_points is not None and ci_floor_points < 0:
        raise ValueError(f"ci_floor_points must be >= 0, got {ci_floor_points}")
    reasons = []
    eligible = []
    for variant in variants:
        measure = variant.ci_low_points if require_ci else variant.delta_points
        meets = measure >= -budget_points - 1e-9
        verdict = f"{'within' if meets else 'outside'} the {budget_points:.2f}-point budget"
        if meets and ci_floor_points is not None and variant.ci_low_points < -ci_floor_points - 1e-9:
            meets = False
            verdict += (
                f", but its interval reaches {variant.ci_low_points:+.2f}, below the -{ci_floor_points:.2f}-point "
                "floor: too uncertain to pass the accuracy gate"
            )
        reasons.append(
            f"{variant.name}: Δ {variant.delta_points:+.2f} points (95% CI low {variant.ci_low_points:+.2f}), "
            f"relative speed ×{variant.relative_speed:.2f} — {verdict}"
        )
        if meets:
            eligible.append(variant)
    if not eligible:
        reasons.append("no variant meets the budget: nothing is chosen (the accuracy gate will say so)")
        return Choice(None, reasons)
    fastest = max(variant.relative_speed for variant in eligible)
    near_fastest = [v for v in eligible if v.relative_speed >= fastest * (1 - speed_tolerance)]
    chosen = min(near_fastest, key=lambda v: (PRODUCTION_COST[v.kind], -v.delta_points, v.name))
    reasons.append(
        f"chosen: {chosen.name} — fastest within budget"
        + (
            f" (within {100 * speed_tolerance:.0f}% of the fastest, {len(near_fastest)} tied; "
            "cheapest to produce, then most accurate)"
            if len(near_fastest) > 1
            else ""
        )
    )
    return Choice(chosen, reasons)
