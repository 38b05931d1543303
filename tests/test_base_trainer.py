"""The video LoRA trainers' base (BaseVideoLoRATrainer, BaseConfig): metrics, the model-card template, old import
paths. Training itself is covered by the trainers' own tests."""

from collections import defaultdict

import pytest
import torch
from huggingface_hub import ModelCard

from icreward.trainers.base_config import BaseConfig
from icreward.trainers.base_trainer import BaseVideoLoRATrainer


def _bare(cls):
    """A trainer without ``Trainer.__init__``: only the metric state (enough for the metric methods)."""
    trainer = cls.__new__(cls)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    return trainer


def test_every_config_and_video_trainer_shares_the_bases():
    from icreward.trainers import (
        DiffusionTrainingConfig,
        RewardFeedbackConfig,
        RewardFeedbackTrainer,
        RewardModelConfig,
        VideoDPOConfig,
        VideoDPOTrainer,
        VideoGRPOConfig,
        VideoGRPOTrainer,
    )

    for config in (DiffusionTrainingConfig, VideoDPOConfig, RewardFeedbackConfig, VideoGRPOConfig, RewardModelConfig):
        assert issubclass(config, BaseConfig)
        assert config(output_dir="unused").bf16 is False and config(output_dir="unused").remove_unused_columns is False
    for trainer in (VideoDPOTrainer, RewardFeedbackTrainer, VideoGRPOTrainer):
        assert issubclass(trainer, BaseVideoLoRATrainer)
        assert trainer._name == trainer.__name__
        assert trainer._paper["description"] and trainer._paper["citation"].lstrip().startswith("@")
        assert "```" not in trainer._paper["citation"]  # the template adds the fence


def test_old_import_paths_still_work():
    from icreward.trainers import preference_curves, prompt_data, reward_feedback_sampling, video_grpo_sampling
    from icreward.trainers.adapter_lora import AdapterLoRATrainerMixin
    from icreward.trainers.reward_feedback_trainer import (
        DEFAULT_REWARD_WEIGHT,
        RewardFeedbackCollator,
        load_prompt_dataset,
        sample_with_truncated_backprop,
    )
    from icreward.trainers.video_dpo_trainer import PreferenceCurveCallback
    from icreward.trainers.video_grpo_trainer import flow_sde_schedule, sample_sde_trajectory

    assert AdapterLoRATrainerMixin is BaseVideoLoRATrainer
    assert DEFAULT_REWARD_WEIGHT == 0.1
    assert RewardFeedbackCollator is prompt_data.RewardFeedbackCollator
    assert load_prompt_dataset is prompt_data.load_prompt_dataset
    assert sample_with_truncated_backprop is reward_feedback_sampling.sample_with_truncated_backprop
    assert PreferenceCurveCallback is preference_curves.PreferenceCurveCallback
    assert flow_sde_schedule is video_grpo_sampling.flow_sde_schedule
    assert sample_sde_trajectory is video_grpo_sampling.sample_sde_trajectory
    with pytest.raises(ImportError):
        from icreward.trainers.adapter_lora import NoSuchThing  # noqa: F401


def test_logged_metrics_are_means_totals_and_per_trainer_extras():
    from icreward.trainers import VideoDPOTrainer, VideoGRPOTrainer

    base = _bare(BaseVideoLoRATrainer)
    base._metrics["train"]["reward"].extend([1.0, 2.0, 6.0])
    base._metrics["train"]["rewards/face/nonfinite"].extend([1.0, 0.0, 2.0])
    assert base._pop_metrics("train") == {"reward": 3.0, "rewards/face/nonfinite": 3.0}
    assert base._pop_metrics("train") == {}  # cleared

    grpo = _bare(VideoGRPOTrainer)
    grpo._metrics["train"]["reward_std"].extend([0.1, 0.5])
    assert grpo._pop_metrics("train") == pytest.approx(
        {"reward_std": 0.3, "reward_std/min": 0.1, "reward_std/max": 0.5}
    )

    dpo = _bare(VideoDPOTrainer)
    dpo._metrics["eval"]["rewards/accuracies"].extend([1.0, 0.0, 1.0, 1.0])
    assert dpo._pop_metrics("eval") == {"rewards/accuracies": 0.75, "num_pairs": 4}
    assert dpo._pop_metrics("eval") == {}
    # the DPO trainer attaches its metrics to every training log; the others only to the Trainer's (with a loss)
    assert dpo._attach_train_metrics({"train_runtime": 1.0})
    assert not base._attach_train_metrics({"validation/reward": 1.0}) and base._attach_train_metrics({"loss": 0.0})


def test_row_generators_depend_on_the_row_and_step_only():
    trainer = _bare(BaseVideoLoRATrainer)

    class _Args:
        seed = 7

    class _State:
        global_step = 3

    trainer.args, trainer.state = _Args(), _State()
    first = trainer._row_noise((2, 3), trainer._row_generators(True, ["a", "b"]))
    again = trainer._row_noise((2, 3), trainer._row_generators(True, ["b"]))
    assert torch.equal(first[1], again[0])  # row "b" draws the same noise wherever it sits in the batch
    evaluation = trainer._row_noise((2, 3), trainer._row_generators(False, ["b"]))
    trainer.state.global_step = 4
    assert not torch.equal(trainer._row_noise((2, 3), trainer._row_generators(True, ["b"])), again)
    assert torch.equal(trainer._row_noise((2, 3), trainer._row_generators(False, ["b"])), evaluation)


def test_lora_card_from_the_template_parses_and_keeps_hub_metadata():
    from icreward.adapters import get_adapter
    from icreward.testing import tiny_wan_i2v_pipeline
    from icreward.trainers.adapter_lora import render_lora_model_card

    pipe = tiny_wan_i2v_pipeline()
    pipe.register_to_config(_name_or_path="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    adapter = get_adapter(pipe)
    card = render_lora_model_card(
        adapter,
        model_name="grpo",
        dataset_name="org/rows",
        tags=["icreward", "{braces} stay"],
        trainer_name="VideoGRPOTrainer",
        description="Flow-GRPO.",
        training=["- one", "- two"],
        citations="```bibtex\n@misc{x}\n```\n",
    )
    data = ModelCard(card).data.to_dict()
    assert data["base_model"] == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" and data["datasets"] == ["org/rows"]
    assert data["library_name"] == "diffusers" and data["pipeline_tag"] == "image-to-video"
    assert data["tags"] == ["icreward", "{braces} stay", adapter.family, "template:diffusion-lora"]
    assert "# grpo: VideoGRPOTrainer LoRA for Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in card
    assert 'WanImageToVideoPipeline.from_pretrained("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"' in card
    assert "## Training\n\n- one\n- two\n\n## Citation\n\n```bibtex\n@misc{x}\n```\n" in card
    assert card.endswith("```\n")
