"""Diffusion-/Flow-DPO of an image-to-video model towards reference-image consistency (the ICReward recipe).

    python examples/dpo.py                                             # tiny offline Wan 2.1, CPU, ~1 minute
    python examples/dpo.py --config examples/configs/dpo_tiny.yaml --max_steps 60   # CLI overrides the YAML
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        examples/dpo.py --config examples/configs/dpo_tiny.yaml        # two CPU processes (use_cpu is in the YAML)
    accelerate launch examples/dpo.py --config examples/configs/dpo_wan21_i2v_480p.yaml   # GPUs, real Wan 2.1

Data. ``--dataset pairs.jsonl`` trains on your pairs (rows: ``image``, ``prompt``, ``chosen``, ``rejected``; see
``icreward.data.dpo_pairs``). Without it, pairs are built the paper's way at first use and reused afterwards: the
policy generates ``--num_videos`` videos for each of six reference images (scikit-image's bundled astronaut, coffee
and chelsea photographs and their mirror images, with fixed prompts), two rewards score them, and (reward A's
pick, reward B's pick) becomes (chosen, rejected). The last ``--num_eval_images`` images' pairs are held out for
the preference-accuracy curve.

Rewards. ``--reward_a`` / ``--reward_b`` take icreward reward models (local folders or Hub ids, e.g. a trained
ICRewardModel and MLP baseline, loaded with ``AutoModel``). Without them two deterministic pixel rewards stand in,
so the demo needs nothing but this repository:

- A, consistency: the VBench++ I2V consistency formula (``icreward.metrics.i2v_consistency_score``) on
  8x8 average-pooled, mean-centred RGB "features" of the reference and of each frame;
- B, motion: the mean absolute difference between consecutive frames (a reward that likes change).

With the tiny random-weight model the videos are noise-like, so the run exercises the whole pipeline (pair
building, caching, training, evaluation curves, saving, loading the LoRA back) rather than producing a useful model.

Outputs in ``--output_dir``: ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(output_dir)``; Wan 2.2
writes one file per trained expert), ``README.md`` (model card), ``preference_curves.json``,
``preference_accuracy.png`` and ``running_win_rate.png`` (the paper's Figs. 5 and 6), checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from trl import ModelConfig, TrlParser, get_peft_config  # noqa: E402

from icreward import VideoDPOConfig, VideoDPOTrainer  # noqa: E402
from icreward.adapters import VideoModelAdapter  # noqa: E402
from icreward.data.dpo_pairs import generate_reward_pairs, load_dpo_pairs  # noqa: E402
from icreward.testing.tiny_pipelines import TINY_POLICIES, load_policy_pipeline, lora_output_change  # noqa: E402

PHOTOS = (
    ("astronaut", "an astronaut smiles and turns her head, the camera slowly zooms in"),
    ("coffee", "steam rises from a cup of coffee on a saucer"),
    ("chelsea", "a cat blinks and looks around"),
)


@dataclass
class ScriptArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "Pairs file (.jsonl/.json). Default: build pairs with the policy under --pairs_dir."},
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Held-out pairs file for preference accuracy."})
    pairs_dir: str = field(
        default="outputs/dpo_pairs", metadata={"help": "Where built pairs are written (reused when present)."}
    )
    num_videos: int = field(default=4, metadata={"help": "Videos generated per reference image when building pairs."})
    num_eval_images: int = field(default=2, metadata={"help": "Reference images whose pairs are held out for eval."})
    pair_num_inference_steps: int = field(default=4, metadata={"help": "Sampling steps when building pairs."})
    pair_guidance_scale: float = field(default=1.0, metadata={"help": "Guidance scale when building pairs."})
    reward_a: str | None = field(
        default=None, metadata={"help": "Reward model whose pick is chosen (the paper: ICReward). Default: pixels."}
    )
    reward_b: str | None = field(
        default=None, metadata={"help": "Reward model whose pick is rejected (the paper: the MLP baseline)."}
    )
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads per process (1 is fastest for the tiny model)."}
    )


def load_policy(model_args: ModelConfig) -> tuple[object, str]:
    """The pipeline to fine-tune: a tiny offline one by name, or a Hub id / local diffusers folder."""
    name = model_args.model_name_or_path or "tiny-wan2.1"
    dtype = model_args.dtype
    dtype = getattr(torch, dtype) if dtype not in (None, "auto") else None
    return load_policy_pipeline(name, seed=0, torch_dtype=dtype), name


def _pooled_features(frames: torch.Tensor) -> torch.Tensor:
    pooled = torch.nn.functional.adaptive_avg_pool2d(frames.float() / 255.0, 8)
    return (pooled - 0.5).flatten(1)


def pixel_consistency_reward(reference: torch.Tensor, video: torch.Tensor) -> float:
    """VBench++ I2V consistency on 8x8 pooled RGB features: a deterministic stand-in for ICReward."""
    from icreward.metrics.consistency import i2v_consistency_score

    return float(i2v_consistency_score(_pooled_features(reference[None])[0], _pooled_features(video)))


def motion_reward(reference: torch.Tensor, video: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames in [0, 1]: a reward that prefers motion."""
    return float((video[1:].float() - video[:-1].float()).abs().mean() / 255.0)


def load_reward(name_or_path: str):
    """An icreward reward model (``AutoModel``-loadable) as a ``(reference, video) -> float`` callable."""
    from transformers import AutoModel

    import icreward.models  # noqa: F401  (registers the reward models with AutoModel)

    model = AutoModel.from_pretrained(name_or_path).eval()
    return lambda reference, video: float(model.score(reference, video))


def reference_images() -> list[tuple[object, str]]:
    """Six reference photos that ship with scikit-image (three photographs and their mirror images)."""
    import PIL.Image
    import skimage.data

    images = []
    for flip in (False, True):
        for name, prompt in PHOTOS:
            image = PIL.Image.fromarray(getattr(skimage.data, name)())
            images.append((image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT) if flip else image, prompt))
    return images


def build_pairs(pipeline, script_args: ScriptArguments, args: VideoDPOConfig):
    """Generate and score candidate videos with the policy; split pairs by reference image into train / eval."""
    pairs_file = Path(script_args.pairs_dir) / "pairs.jsonl"
    if not pairs_file.is_file():
        reward_a = load_reward(script_args.reward_a) if script_args.reward_a else pixel_consistency_reward
        reward_b = load_reward(script_args.reward_b) if script_args.reward_b else motion_reward
        images, prompts = zip(*reference_images())
        _, stats = generate_reward_pairs(
            pipeline,
            list(images),
            list(prompts),
            reward_a,
            reward_b,
            output_dir=script_args.pairs_dir,
            num_videos=script_args.num_videos,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            num_inference_steps=script_args.pair_num_inference_steps,
            guidance_scale=script_args.pair_guidance_scale,
            seed=args.seed,
        )
        print(f"built {stats.num_pairs} pairs from {stats.num_videos} videos; {stats.num_same_pick} images skipped")
    pairs = load_dpo_pairs(pairs_file)
    num_images = len(PHOTOS) * 2
    held_out = set(range(num_images - script_args.num_eval_images, num_images))
    train = pairs.filter(lambda row: row["image_index"] not in held_out)
    evaluation = pairs.filter(lambda row: row["image_index"] in held_out)
    if len(train) == 0:
        raise ValueError(f"no training pairs in {pairs_file}: both rewards picked the same video for every image")
    return train, (evaluation if len(evaluation) else None)


def check_lora_loads(output_dir: str, model_name: str, adapter: VideoModelAdapter, args: VideoDPOConfig) -> None:
    """Load the saved LoRA into a fresh tiny pipeline and show that it changes the generated video."""
    image, prompt = reference_images()[0]
    size = {"num_frames": args.num_frames, "height": args.height, "width": args.width}
    change = lora_output_change(model_name, output_dir, adapter.trainable_modules, image=image, prompt=prompt, **size)
    print(f"LoRA from {output_dir} loaded into a fresh pipeline: max change of the generated video = {change:.4f}")


def main(script_args: ScriptArguments, training_args: VideoDPOConfig, model_args: ModelConfig) -> None:
    import datasets

    datasets.disable_progress_bars()  # the pair tables are tiny; their map/filter bars only add noise
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    if training_args.torch_dtype:  # the trainer config's torch_dtype wins over the model config's dtype
        model_args.dtype = training_args.torch_dtype
    pipeline, model_name = load_policy(model_args)
    state = PartialState()
    if script_args.dataset:
        train_dataset = script_args.dataset
        eval_dataset = script_args.eval_dataset
    else:
        with state.main_process_first():  # the main process generates, the others then read the files
            train_dataset, eval_dataset = build_pairs(pipeline, script_args, training_args)
    if eval_dataset is None and training_args.eval_strategy != "no":
        training_args.eval_strategy = "no"  # nothing held out (e.g. every held-out image gave no pair)

    peft_config = get_peft_config(model_args)
    trainer = VideoDPOTrainer(
        model=pipeline,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset)
    if trainer.is_world_process_zero() and model_name in TINY_POLICIES:
        check_lora_loads(training_args.output_dir, model_name, trainer.adapter, training_args)
    trainer.accelerator.end_training()  # multi-process CPU runs can abort at exit without it


if __name__ == "__main__":
    import sys

    if not any(arg == "--config" or arg.startswith("--config=") for arg in sys.argv[1:]):
        # No config: the offline tiny demo (CLI flags still override it).
        sys.argv[1:1] = ["--config", str(Path(__file__).parent / "configs" / "dpo_tiny.yaml")]
    parser = TrlParser((ScriptArguments, VideoDPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = "tiny-wan2.1"
    model_args.use_peft = True  # VideoDPOTrainer trains LoRA adapters
    main(script_args, training_args, model_args)
