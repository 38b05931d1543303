"""Worker for tests/test_video_grpo.py: GRPO-train a LoRA on the tiny Wan 2.1 pipeline, save its weights.

python tests/scripts/distributed_grpo_training.py ROWS_JSONL OUT_FILE ROWS_PER_DEVICE GRAD_ACCUM
accelerate launch --multi_gpu --num_processes 2 ... tests/scripts/distributed_grpo_training.py ROWS OUT 2 1

Saves the LoRA before and after training, and in the metadata the world size, the mean evaluation reward after
training and the logged training rewards (which must not depend on the process layout either).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from icreward import VideoGRPOConfig, VideoGRPOTrainer  # noqa: E402
from icreward.testing import tiny_wan_i2v_pipeline  # noqa: E402

MAX_STEPS = 3
PATTERN = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))


def pattern_reward(video: torch.Tensor) -> torch.Tensor:
    return 100 * (video * PATTERN.to(video.device)).mean(dim=(1, 2, 3, 4))


def _lora_state(trainer: VideoGRPOTrainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone().contiguous()
        for name, module in trainer.adapter.trainable_modules.items()
        for key, value in module.named_parameters()
        if "lora_" in key
    }


def main(rows: str, out_file: str, per_device_rows: int, grad_accum: int) -> None:
    torch.set_num_threads(1)
    args = VideoGRPOConfig(
        output_dir=os.path.dirname(out_file),
        num_frames=9,
        height=32,
        width=32,
        # Every random draw of a step is exercised: initial noise, SDE noise and a random half of the transitions.
        num_inference_steps=4,
        timestep_fraction=0.5,
        num_generations=2,
        beta=0.1,
        epsilon=0.2,
        per_device_train_batch_size=per_device_rows,
        per_device_eval_batch_size=per_device_rows,
        gradient_accumulation_steps=grad_accum,
        max_steps=MAX_STEPS,
        # Plain SGD keeps weight differences linear in gradient differences (see the reward-feedback worker).
        optim="sgd",
        learning_rate=50.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    torch.manual_seed(0)  # peft initialises LoRA A from the global RNG
    trainer = VideoGRPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        reward_funcs={"pattern": pattern_reward},
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
        rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log and "loss" in log]
        metadata = {
            "world_size": str(trainer.args.world_size),
            "eval_reward": repr(metrics["eval_reward"]),
            "train_rewards": json.dumps(rewards),
        }
        save_file(state, out_file, metadata=metadata)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
