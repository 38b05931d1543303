"""Worker for tests/test_distributed.py: DPO-train a LoRA on the tiny Wan 2.1 pipeline and save its final weights.

python tests/scripts/distributed_dpo_training.py PAIRS_JSONL OUT_FILE PER_DEVICE_BATCH GRAD_ACCUM
accelerate launch --multi_gpu --num_processes 2 ... tests/scripts/distributed_dpo_training.py PAIRS OUT 2 1

The run saves a checkpoint at its last step; process 1 writes its RNG state one second late, so a completion marker
written before every process has finished its part of the checkpoint shows up as older than that file.
"""

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from icreward import VideoDPOConfig, VideoDPOTrainer  # noqa: E402
from icreward.testing import tiny_wan_i2v_pipeline  # noqa: E402

MAX_STEPS = 3


class _LateRankTrainer(VideoDPOTrainer):
    def _save_rng_state(self, output_dir: str) -> None:
        if self.args.process_index == 1:
            time.sleep(1.0)
        super()._save_rng_state(output_dir)


def _lora_state(trainer: VideoDPOTrainer) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone().contiguous()
        for name, module in trainer.adapter.trainable_modules.items()
        for key, value in module.named_parameters()
        if "lora_" in key
    }


def main(pairs: str, out_file: str, per_device_batch: int, grad_accum: int) -> None:
    torch.set_num_threads(1)
    args = VideoDPOConfig(
        output_dir=os.path.dirname(out_file),
        num_frames=9,
        height=32,
        width=32,
        beta=100.0,
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=grad_accum,
        max_steps=MAX_STEPS,
        # Plain SGD keeps weight differences linear in gradient differences. Adam's first steps are about
        # lr * sign(grad), which turns float rounding on near-zero gradient entries into lr-sized differences.
        optim="sgd",
        learning_rate=0.5,
        logging_steps=1,
        save_strategy="steps",
        save_steps=MAX_STEPS,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        plot_preference_curves=False,
        dataloader_num_workers=0,
        seed=0,
    )
    torch.manual_seed(0)  # peft initialises LoRA A from the global RNG
    trainer = _LateRankTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LoraConfig(r=4, lora_alpha=4)
    )
    initial = _lora_state(trainer)
    trainer.train()
    if trainer.is_world_process_zero():
        state = {**_lora_state(trainer), **{f"initial/{k}": v for k, v in initial.items()}}
        save_file(state, out_file, metadata={"world_size": str(trainer.args.world_size)})
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
