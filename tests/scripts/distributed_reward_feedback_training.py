"""Worker for tests/test_distributed.py: reward-feedback-train a LoRA on the tiny Wan 2.1 pipeline, save its weights.

python tests/scripts/distributed_reward_feedback_training.py ROWS_JSONL OUT_FILE PER_DEVICE_BATCH GRAD_ACCUM
accelerate launch --multi_gpu --num_processes 2 ... tests/scripts/distributed_reward_feedback_training.py ROWS OUT 2 1

Saves the LoRA before and after training, and in the metadata the world size and the mean reward of an evaluation
after training (the rows again, ``PER_DEVICE_BATCH`` rows per process and batch).
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from icreward import RewardFeedbackConfig, RewardFeedbackTrainer  # noqa: E402
from icreward.rewards.combined import CallableReward  # noqa: E402
from icreward.testing import tiny_wan_i2v_pipeline  # noqa: E402

MAX_STEPS = 3
# A fixed pixel pattern: the reward is the video's correlation with it, a differentiable target the LoRA can move.
PATTERN = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))


def pattern_reward(video: torch.Tensor) -> torch.Tensor:
    return 100 * (video * PATTERN.to(video.device)).mean(dim=(1, 2, 3, 4))


def _lora_state(trainer: RewardFeedbackTrainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone().contiguous()
        for name, module in trainer.adapter.trainable_modules.items()
        for key, value in module.named_parameters()
        if "lora_" in key
    }


def main(rows: str, out_file: str, per_device_batch: int, grad_accum: int) -> None:
    torch.set_num_threads(1)
    args = RewardFeedbackConfig(
        output_dir=os.path.dirname(out_file),
        num_frames=9,
        height=32,
        width=32,
        # Three sampler steps, gradients through the last two (with the velocity KL on both), and a random window of
        # two of the three latent frames decoded: every random draw of a training step is exercised.
        num_inference_steps=3,
        truncated_backprop_steps=2,
        kl_weight=1.0,
        decode_frame_subset=2,
        reward_weights=[1.0],
        per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=per_device_batch,
        gradient_accumulation_steps=grad_accum,
        max_steps=MAX_STEPS,
        # Plain SGD keeps weight differences linear in gradient differences (Adam's first steps are about
        # lr * sign(grad), which turns float rounding on near-zero gradient entries into lr-sized differences).
        optim="sgd",
        learning_rate=4.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    torch.manual_seed(0)  # peft initialises LoRA A from the global RNG
    trainer = RewardFeedbackTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        reward_funcs=CallableReward(pattern_reward, name="pattern"),
        args=args,
        train_dataset=rows,
        eval_dataset=rows,
        peft_config=LoraConfig(r=4, lora_alpha=4),
    )
    initial = _lora_state(trainer)
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        state = {**_lora_state(trainer), **{f"initial/{k}": v for k, v in initial.items()}}
        metadata = {"world_size": str(trainer.args.world_size), "eval_reward": repr(metrics["eval_reward"])}
        save_file(state, out_file, metadata=metadata)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
