"""Reward-model cards: Hub metadata only from real Hub ids, model-index from the results, no runtime fields."""

from huggingface_hub import ModelCard

from icreward.models import ICRewardModel, MLPRewardModel, create_reward_model_card
from icreward.models.model_card import is_hub_id
from icreward.testing.tiny_backbones import tiny_icreward_config, tiny_mlp_reward_config

METRICS = {"test_mse": 0.05, "test_pairwise_accuracy": 0.7, "test_runtime": 3.2, "test_samples_per_second": 9.0}


def test_free_text_data_stays_out_of_the_metadata_and_results_fill_the_model_index(tmp_path):
    model = ICRewardModel(tiny_icreward_config(head_num_layers=1))
    card = create_reward_model_card(model, dataset_name="icreward bundled stress-test suite", metrics=METRICS)
    reparsed = ModelCard(str(card))  # what the Hub reads
    data = reparsed.data.to_dict()
    assert "datasets" not in data and "base_model" not in data  # free text, random-init backbone
    assert data["library_name"] == "icreward" and data["pipeline_tag"] == "video-classification"
    results = {r.metric_name: r.metric_value for r in reparsed.data.eval_results}
    assert results == {"test_mse": 0.05, "test_pairwise_accuracy": 0.7}
    assert "runtime" not in str(card) and "samples_per_second" not in str(card)
    assert "1 block," in str(card) and "1 blocks" not in str(card)
    assert "github.com" not in str(card)
    assert "icreward bundled stress-test suite" in str(card)  # still named, in the training-data section


def test_hub_ids_go_to_datasets_and_base_model(tmp_path):
    config = tiny_mlp_reward_config()
    config.backbone_name_or_path = "openai/clip-vit-base-patch32"
    card = create_reward_model_card(MLPRewardModel(config), dataset_name="org/i2v-preferences", metrics=None)
    data = ModelCard(str(card)).data.to_dict()
    assert data["datasets"] == ["org/i2v-preferences"] and data["base_model"] == "openai/clip-vit-base-patch32"
    assert "model-index" not in str(card)
    assert is_hub_id("org/name") and not is_hub_id("sample") and not is_hub_id(str(tmp_path))


def test_lora_card_names_the_pipeline_and_keeps_free_text_out_of_the_metadata():
    from icreward.adapters import get_adapter
    from icreward.testing import tiny_wan_i2v_pipeline
    from icreward.trainers.adapter_lora import render_lora_model_card

    adapter = get_adapter(tiny_wan_i2v_pipeline())
    card = render_lora_model_card(
        adapter,
        model_name="dpo",
        dataset_name="pairs.jsonl",
        tags=[],
        trainer_name="VideoDPOTrainer",
        description="Diffusion-DPO.",
        training=[],
        citations="-",
    )
    assert "# dpo: VideoDPOTrainer LoRA for WanImageToVideoPipeline" in card
    assert "datasets:" not in card and "base_model:" not in card  # a local file name, an in-memory pipeline
    assert "<base model>" not in card and "github.com" not in card
    assert "load_lora_weights" in card


def test_push_to_hub_offline_says_why(tmp_path, monkeypatch):
    import pytest

    from icreward.models.model_card import HubUnreachableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = MLPRewardModel(tiny_mlp_reward_config())
    with pytest.raises(HubUnreachableError, match=r"push_to_hub\('org/x'\) failed: HF_HUB_OFFLINE=1 is set"):
        model.push_to_hub("org/x")
