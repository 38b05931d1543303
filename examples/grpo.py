"""Flow-GRPO-style online RL of an image-to-video model on any reward (face identity, ICReward, a combination).

    python examples/grpo.py                                                # tiny offline Wan 2.1, CPU, ~1 minute
    python examples/grpo.py --config examples/configs/grpo_tiny.yaml --max_steps 20
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        examples/grpo.py --config examples/configs/grpo_tiny.yaml           # two CPU processes
    accelerate launch examples/grpo.py --config examples/configs/grpo_wan21_i2v_480p.yaml   # GPUs, real Wan 2.1

What happens. For each (reference image, prompt) row the policy samples a group of ``num_generations`` videos with the
SDE form of the flow-matching sampler (on the pipeline scheduler's sigmas), the rewards score them, each group's
rewards become advantages, and the LoRA minimises the clipped ratio of the per-step Gaussian transition
probabilities plus a KL to the LoRA-disabled model (see ``docs/grpo.md``). The rewards need no gradient.

Data and rewards are those of ``examples/reward_feedback.py`` (its ``ScriptArguments``: ``--dataset rows.jsonl``,
``--face_embedder``, ``--reward_model``, ``--pixel_consistency_weight`` ...; the astronaut demo rows by default).
With the tiny random-weight model the videos contain no face, so the face reward is constant and every group's
spread is zero (``frac_reward_zero_std = 1``): the tiny configuration adds the pixel consistency reward so that the
groups differ and the LoRA trains.

Outputs in ``--output_dir``: ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(output_dir)``; for Wan 2.2
``icreward.adapters.load_wan22_lora``), ``README.md`` (model card), checkpoints.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # the reward-feedback example's data and reward helpers

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from reward_feedback import (  # noqa: E402
    ScriptArguments,
    build_face_reward,
    check_lora_loads,
    load_policy,
    pixel_consistency,
    write_demo_rows,
)
from trl import ModelConfig, TrlParser, get_peft_config  # noqa: E402

from icreward import VideoGRPOConfig, VideoGRPOTrainer  # noqa: E402
from icreward.rewards.combined import RewardModelReward  # noqa: E402
from icreward.testing.tiny_pipelines import TINY_POLICIES  # noqa: E402

logger = logging.getLogger("grpo")


def main(script_args: ScriptArguments, training_args: VideoGRPOConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    if training_args.torch_dtype:  # the trainer config's torch_dtype wins over the model config's dtype
        model_args.dtype = training_args.torch_dtype
    pipeline, model_name = load_policy(model_args)
    if script_args.dataset:
        train_dataset = script_args.dataset
    else:
        with PartialState().main_process_first():
            train_dataset = str(write_demo_rows(script_args.data_dir))

    rewards = {"face": (build_face_reward(script_args), script_args.face_reward_weight)}
    if script_args.reward_model:
        from transformers import AutoModel

        import icreward.models  # noqa: F401  (registers the reward models with AutoModel)

        model = AutoModel.from_pretrained(script_args.reward_model)
        rewards["reward_model"] = (RewardModelReward(model), script_args.reward_model_weight)
    if script_args.pixel_consistency_weight:
        rewards["pixel_consistency"] = (pixel_consistency, script_args.pixel_consistency_weight)

    trainer = VideoGRPOTrainer(
        model=pipeline,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=script_args.eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if script_args.eval_dataset:
        trainer.log_metrics("eval", trainer.evaluate())
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset)
    spreads = [log["frac_reward_zero_std"] for log in trainer.state.log_history if "frac_reward_zero_std" in log]
    if spreads and min(spreads) == 1.0 and trainer.is_world_process_zero():
        logger.warning(
            "every group's videos scored alike (frac_reward_zero_std = 1): no advantage, nothing learned. Raise "
            "noise_level or num_generations, or use a reward that separates the samples"
        )
    if trainer.is_world_process_zero() and model_name in TINY_POLICIES:
        check_lora_loads(training_args.output_dir, model_name, trainer.adapter, training_args)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    if not any(arg == "--config" or arg.startswith("--config=") for arg in sys.argv[1:]):
        sys.argv[1:1] = ["--config", str(Path(__file__).parent / "configs" / "grpo_tiny.yaml")]
    parser = TrlParser((ScriptArguments, VideoGRPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = "tiny-wan2.1"
    model_args.use_peft = True  # VideoGRPOTrainer trains LoRA adapters
    main(script_args, training_args, model_args)
