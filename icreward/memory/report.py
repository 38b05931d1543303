"""The memory accountant's result (:class:`MemoryEstimate`) and its printed report."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class MemoryEstimate:
    recipe: str
    hub_id: str
    trainer: str
    latent_shape: tuple[int, ...]
    rows: dict[str, float | None]  # GiB; None = not counted
    phases: dict[str, float]  # GiB at each phase of a step; the peak is their maximum
    not_counted: list[str]
    assumptions: list[str]
    activations_variants: dict[str, float]  # GiB of activations with / without per-block checkpointing
    budget_gib: float
    seconds: float

    @property
    def peak_gib(self) -> float:
        return float(self.rows["peak"])

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.budget_gib


def format_estimate(est: MemoryEstimate) -> str:
    lines = [
        f"{est.recipe}: {est.trainer} on {est.hub_id}, latents {est.latent_shape}",
        f"{'part':<14}{'GiB':>12}",
    ]
    for name, value in est.rows.items():
        if name == "peak":
            continue
        lines.append(f"{name:<14}{'not counted' if value is None else f'{value:.2f}':>12}")
    lines.append("phases (the peak is the largest):")
    for name, value in est.phases.items():
        lines.append(f"  {value:8.2f} GiB  {name}")
    lines.append(f"{'peak':<14}{est.peak_gib:>12.2f}")
    for name, value in est.activations_variants.items():
        lines.append(f"  denoiser activations {name}: {value:.2f} GiB")
    verdict = "fits" if est.fits else "does NOT fit"
    lines.append(f"peak {est.peak_gib:.2f} GiB {verdict} the {est.budget_gib:g} GiB budget (counted parts only)")
    lines.extend(f"assumption: {a}" for a in est.assumptions)
    lines.extend(f"not counted: {n}" for n in est.not_counted)
    lines.append(f"accounted in {est.seconds:.1f} s")
    return "\n".join(lines)
