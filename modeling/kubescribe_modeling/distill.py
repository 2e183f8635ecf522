"""Knowledge distillation: a KL term between teacher and student frame posteriors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    lengths: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over valid frames of ``T^2 * KL(teacher_T || student_T)``.

    Both ``[N, T', V+1]`` with the same subsampling; frames at or beyond ``lengths`` are ignored.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
            "outputs differ: distillation needs the same vocabulary and subsampling"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    per_frame = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    mask = torch.arange(per_frame.shape[1], device=per_frame.device)[None, :] < lengths[:, None]
    maskf = mask.to(per_frame.dtype)
    return (per_frame * maskf).sum() / maskf.sum().clamp(min=1.0) * temperature**2
