"""RewardFeedbackTrainer (DRaFT-K + velocity KL, IPRO) on tiny offline pipelines.

The tiny pipelines' random VAE barely changes the mean brightness of what it decodes, so the "training moves the
reward" test uses a reward the decoder can express: correlation with the pixel pattern this decoder produces when
every latent increases.
"""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig
from torch import nn

from icreward.adapters import get_adapter
from icreward.losses import velocity_kl
from icreward.rewards.combined import CallableReward, CombinedReward, FaceReward
from icreward.testing.tiny_pipelines import TINY_DEFAULTS, tiny_wan22_pipeline, tiny_wan_i2v_pipeline
from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer, sample_with_truncated_backprop

LORA = LoraConfig(r=4, lora_alpha=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are fastest single-threaded; two threads on a shared 2-core machine spin-wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.RandomState(0)
    images = [PIL.Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(2)]
    return [{"image": image, "prompt": f"a cat number {i}"} for i, image in enumerate(images)]


def brightness(video):
    return video.mean(dim=(1, 2, 3, 4))


def _config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        "num_frames": 9,
        "height": 32,
        "width": 32,
        "num_inference_steps": 2,
        "truncated_backprop_steps": 1,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    kwargs.update(overrides)
    return RewardFeedbackConfig(**kwargs)


def _trainer(tmp_path, rows, reward=None, pipe=None, lora=LORA, **overrides):
    return RewardFeedbackTrainer(
        model=pipe if pipe is not None else tiny_wan_i2v_pipeline(seed=0),
        reward_funcs=reward if reward is not None else CallableReward(brightness, name="brightness"),
        args=_config(tmp_path, **overrides),
        train_dataset=rows,
        peft_config=lora,
    )


def _params(pipe):
    return {
        f"{component}.{name}": p.detach().clone()
        for component in ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder")
        if isinstance(getattr(pipe, component, None), nn.Module)
        for name, p in getattr(pipe, component).named_parameters()
    }


def _one_loss(trainer):
    """compute_loss on the first row; resets the noise counter so that repeated calls draw the same noise."""
    trainer._noise_step = -1
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[0]]))
    trainer.model.train()
    return trainer.compute_loss(trainer.model, batch)


# ---------------------------------------------------------------------------------------------------------------
# DRaFT-K: which steps carry gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_grad_steps", [1, 2])
def test_only_the_last_k_steps_carry_gradients(tmp_path, rows, num_grad_steps):
    trainer = _trainer(tmp_path, rows, num_inference_steps=3, truncated_backprop_steps=num_grad_steps, kl_weight=0.0)
    calls = []

    def record(module, args, kwargs):
        hidden = kwargs["hidden_states"]
        calls.append((torch.is_grad_enabled(), hidden.requires_grad, hidden.grad_fn is not None))

    handle = trainer.adapter.pipeline.transformer.register_forward_pre_hook(record, with_kwargs=True)
    loss = _one_loss(trainer)
    handle.remove()
    grad_enabled = [c[0] for c in calls]
    assert grad_enabled == [False] * (3 - num_grad_steps) + [True] * num_grad_steps
    # the latents entering the trained window are detached; later ones carry the graph of the trained steps
    first = 3 - num_grad_steps
    assert all(not c[1] and not c[2] for c in calls[: first + 1])
    assert all(c[1] and c[2] for c in calls[first + 1 :])
    loss.backward()
    lora_grads = [p.grad for n, p in trainer.adapter.pipeline.transformer.named_parameters() if "lora_B" in n]
    assert all(g is not None for g in lora_grads) and any(float(g.abs().sum()) > 0 for g in lora_grads)


def test_sampling_and_kl_match_an_independent_euler_loop(tmp_path, rows):
    """The policy's video and KL against a hand-written Euler loop, velocity_kl-free, with a non-zero LoRA."""
    trainer = _trainer(tmp_path, rows, num_inference_steps=3, truncated_backprop_steps=2, kl_step_weights=[0.5, 2.0])
    adapter = trainer.adapter
    generator = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.05
    batch = trainer.data_collator([trainer.train_dataset[0]])
    conditions, _ = trainer._encode_conditions(batch)
    noise = torch.randn((1, *trainer._latent_shape()), generator=generator)
    with torch.no_grad():
        out = trainer.model(noise, conditions)
        timesteps = adapter.inference_timesteps(3)
        x, kl = noise.clone(), torch.zeros(1)
        for i in range(3):
            t = timesteps[i].expand(1)
            v = adapter.predict(x, t, conditions)
            if i >= 1:
                with adapter.disable_lora():
                    v_ref = adapter.predict(x, t, conditions)
                kl += [0.5, 2.0][i - 1] * (v - v_ref).pow(2).mean()
            x = x + (timesteps[i + 1] - timesteps[i]) / 1000.0 * v
        expected_video = adapter.decode_latents(x)
    torch.testing.assert_close(out["video"], expected_video, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["kl"], kl, rtol=1e-4, atol=1e-8)
    assert float(kl) > 0


def _unipc_wan_pipeline():
    """The tiny Wan 2.1 pipeline with the scheduler Wan 2.1 I2V 480P ships (UniPC multistep, flow_shift 3)."""
    import diffusers

    from icreward.adapters.published_configs import get_published_config

    pipe = tiny_wan_i2v_pipeline(seed=0)
    entry = get_published_config("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
    pipe.scheduler = getattr(diffusers, entry.scheduler_class).from_config(entry.scheduler_config)
    return pipe


def test_checkpointing_whole_steps_and_blocks_gives_the_same_gradients(tmp_path, rows):
    """Through Wan's multistep UniPC sampler: no checkpointing, whole denoiser calls only, and what
    activation_checkpointing turns on (whole calls + the transformer's own per-block checkpointing) give the same
    gradients; the scheduler step is never recomputed, the denoiser calls and blocks are."""
    pipe = _unipc_wan_pipeline()
    trainer = _trainer(tmp_path, rows, pipe=pipe, num_inference_steps=3, truncated_backprop_steps=2, kl_weight=0.5)
    policy, transformer = trainer.model, pipe.transformer
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = {}
    for mode in ("none", "whole_calls", "activation_checkpointing"):
        policy.activation_checkpointing_disable()
        if mode == "whole_calls":
            policy.checkpoint_steps = True
        elif mode == "activation_checkpointing":
            policy.activation_checkpointing_enable()
        assert transformer.gradient_checkpointing == (mode == "activation_checkpointing")
        for p in params:
            p.grad = None
        calls, block_calls = [], []
        handles = [
            transformer.register_forward_pre_hook(lambda *a, calls=calls: calls.append(1)),
            transformer.blocks[0].register_forward_pre_hook(lambda *a, calls=block_calls: calls.append(1)),
        ]
        _one_loss(trainer).backward()
        for handle in handles:
            handle.remove()
        grads[mode] = [p.grad.clone() for p in params]
        # 3 sampler calls + 2 reference calls, plus the 2 trained calls recomputed in backward when checkpointed,
        # plus (per-block) each block of those 2 calls recomputed once more
        assert len(calls) == (5 if mode == "none" else 7)
        assert len(block_calls) == {"none": 5, "whole_calls": 7, "activation_checkpointing": 9}[mode]
    assert any(float(g.abs().max()) > 0 for g in grads["none"])
    for mode in ("whole_calls", "activation_checkpointing"):
        for plain, checkpointed in zip(grads["none"], grads[mode], strict=True):
            torch.testing.assert_close(plain, checkpointed, rtol=1e-5, atol=1e-8)
    policy.activation_checkpointing_disable()
    assert not transformer.gradient_checkpointing and not policy.checkpoint_steps


# ---------------------------------------------------------------------------------------------------------------
# Training behaviour
# ---------------------------------------------------------------------------------------------------------------


def test_kl_is_zero_at_step_zero_and_positive_after_updates_only_lora_changes(tmp_path, rows):
    pipe = tiny_wan_i2v_pipeline(seed=0)
    trainer = _trainer(tmp_path, rows, pipe=pipe, max_steps=3, kl_weight=1.0, activation_checkpointing=True)
    before = _params(pipe)
    trainer.train()
    assert trainer.model.checkpoint_steps  # the Trainer turned on per-step checkpointing ...
    assert pipe.transformer.gradient_checkpointing  # ... and the transformer's own per-block checkpointing
    logs = [log for log in trainer.state.log_history if "kl" in log]
    assert logs[0]["kl"] == 0.0  # LoRA B starts at zero: policy and reference predict the same velocity
    assert logs[-1]["kl"] > 0
    assert all(np.isfinite(log["loss"]) for log in logs)
    after = _params(pipe)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    lora = {name for name in before if "lora_" in name}
    assert changed == lora  # every LoRA parameter moved, nothing else did


def test_training_increases_a_learnable_reward(tmp_path, rows):
    # the pixel pattern this decoder produces when every latent increases: a direction its video can move in
    with torch.no_grad():
        base = get_adapter(tiny_wan_i2v_pipeline(seed=0))
        latents = torch.randn(8, 16, 3, 4, 4, generator=torch.Generator().manual_seed(9))
        pattern = (base.decode_latents(latents + 0.5) - base.decode_latents(latents - 0.5)).mean(0, keepdim=True)
        pattern = pattern / pattern.pow(2).mean().sqrt()

    def pattern_similarity(video):
        return 100 * (video * pattern).mean(dim=(1, 2, 3, 4))

    lora = LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_out"])
    # Both rows per step and plain SGD: the expected reward rises steadily. (Batch-1 Adam steps follow single samples'
    # gradients and leave the expected reward about flat; a gain on two fixed samples was then down to the draw.)
    args = _config(
        tmp_path,
        max_steps=16,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=8,
        optim="sgd",
        learning_rate=1.0,
        truncated_backprop_steps=2,
        kl_weight=0.0,
    )
    # 32 evaluation samples (the two images under 16 prompts), each from its row's own fixed noise: enough to average
    # out which samples happen to improve.
    eval_rows = [{**row, "prompt": f"{row['prompt']} in scene {k}"} for row in rows for k in range(16)]
    trainer = RewardFeedbackTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        reward_funcs={"pattern": (pattern_similarity, 1.0)},
        args=args,
        train_dataset=rows,
        eval_dataset=eval_rows,
        peft_config=lora,
    )
    before = trainer.evaluate()  # fixed noise: before and after score the same samples
    trainer.train()
    after = trainer.evaluate()
    # with seeds 0-7 the gain is 0.14-0.31 on a reward of about -0.7 to -0.8
    assert after["eval_rewards/pattern"] > before["eval_rewards/pattern"] + 0.1, (before, after)


def _lora(pipe):
    return {name: value for name, value in _params(pipe).items() if "lora_" in name}


def test_resume_after_a_crash_while_saving_matches_uninterrupted_run(tmp_path, rows):
    from icreward.trainers.checkpointing import CHECKPOINT_COMPLETE_NAME

    # Accumulation, a decoded frame window drawn from each row's generator (keyed by the global step), a decaying
    # learning rate (scheduler state) and Adam (optimizer state): everything a resume has to restore.
    settings = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        gradient_accumulation_steps=2,
        decode_frame_subset=2,
        kl_weight=1.0,
        lr_scheduler_type="linear",
        learning_rate=5e-3,
    )

    def trainer(subdir):
        pipe = tiny_wan_i2v_pipeline(seed=0)
        return pipe, _trainer(tmp_path / subdir, rows, pipe=pipe, **settings)

    full_pipe, full = trainer("full")
    initial = _lora(full_pipe)
    full.train()
    uninterrupted = _lora(full_pipe)

    # The run dies while writing checkpoint-4: its LoRA and optimizer are on disk, its RNG state is not.
    _, crashed = trainer("crash")
    save_rng_state = crashed._save_rng_state

    def die_at_step_4(output_dir):
        if crashed.state.global_step == 4:
            raise RuntimeError("killed while saving")
        save_rng_state(output_dir)

    crashed._save_rng_state = die_at_step_4
    with pytest.raises(RuntimeError, match="killed while saving"):
        crashed.train()
    out = tmp_path / "crash" / "out"
    assert (out / "checkpoint-2" / CHECKPOINT_COMPLETE_NAME).is_file()
    assert (out / "checkpoint-4" / "pytorch_lora_weights.safetensors").is_file()
    assert not (out / "checkpoint-4" / CHECKPOINT_COMPLETE_NAME).exists()

    resumed_pipe, resumed = trainer("crash")
    resumed.train(resume_from_checkpoint=True)  # skips the incomplete checkpoint-4, resumes from checkpoint-2
    assert [log["step"] for log in resumed.state.log_history if "loss" in log] == [1, 2, 3, 4, 5, 6]
    assert (out / "checkpoint-4" / CHECKPOINT_COMPLETE_NAME).is_file()  # rewritten, complete this time
    final = _lora(resumed_pipe)
    assert final.keys() == uninterrupted.keys() and final
    assert all(not torch.equal(final[name], initial[name]) for name in final)  # so equality below means something
    for name in uninterrupted:
        torch.testing.assert_close(final[name], uninterrupted[name], rtol=0, atol=0, msg=name)


def test_a_rows_noise_and_frame_window_ignore_its_batch(tmp_path, rows):
    three = [*rows, {**rows[0], "prompt": "a cat number 2"}]
    trainer = _trainer(tmp_path, three, decode_frame_subset=2)  # a window of 2 of the 3 latent frames
    ids = [trainer.data_collator([trainer.train_dataset[i]])["row_ids"][0] for i in range(3)]
    assert len(set(ids)) == 3  # the prompt tells apart two rows with the same image

    def draw(indices, training=True):
        return trainer._draw_noise(len(indices), training, [ids[i] for i in indices])[:2]

    noise_all, starts_all = draw([0, 1, 2])
    noise_one, starts_one = draw([2])
    noise_rev, starts_rev = draw([2, 0])
    # A row's draws ignore its batch and position: the same whatever the batch size or process layout.
    torch.testing.assert_close(noise_one[0], noise_all[2], rtol=0, atol=0)
    torch.testing.assert_close(noise_rev, noise_all[[2, 0]], rtol=0, atol=0)
    assert starts_one == [starts_all[2]] and starts_rev == [starts_all[2], starts_all[0]]
    assert not torch.equal(noise_all[0], noise_all[1])  # ... but differ between rows
    trainer.state.global_step = 1
    noise_next, _ = draw([0, 1, 2])
    assert not torch.equal(noise_next, noise_all)  # ... and between steps
    # Evaluation: per row, the same at every step, and not the training noise.
    eval_noise, _ = draw([0, 1], training=False)
    trainer.state.global_step = 5
    torch.testing.assert_close(draw([1], training=False)[0][0], eval_noise[1], rtol=0, atol=0)
    assert not torch.equal(eval_noise, noise_all[:2])
    # Over many steps each row decodes every window: the start is drawn, not fixed.
    assert {draw([0])[1][0] for trainer.state.global_step in range(20)} == {0, 1}

    # Windows with different starts in one batch: each sample decodes its own window.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    conditions, _ = trainer._encode_conditions(batch)
    with torch.no_grad():
        both = trainer.model(noise_all[:2], conditions, decode_starts=[0, 1], decode_length=2)["video"]
        for i, start in enumerate([0, 1]):
            single = {k: v[i : i + 1] if torch.is_tensor(v) else v for k, v in conditions.items()}
            alone = trainer.model(noise_all[i : i + 1], single, decode_starts=[start], decode_length=2)["video"]
            torch.testing.assert_close(both[i : i + 1], alone, rtol=1e-4, atol=1e-5)


def test_repeated_rows_get_their_own_noise_and_a_collator_without_row_ids_falls_back(tmp_path, rows):
    trainer = _trainer(tmp_path, [rows[0], rows[1], rows[0]])
    ids = [trainer.train_dataset[i]["__reward_row_id"] for i in range(3)]
    assert ids[2] == f"{ids[0]}#2" and len(set(ids)) == 3
    # Without row ids (a custom collator): one generator per (process, step, micro-batch), still reproducible.
    trainer._noise_step = -1
    first, _, _ = trainer._draw_noise(2, True, None)
    trainer._noise_step = -1
    again, _, _ = trainer._draw_noise(2, True, None)
    following, _, _ = trainer._draw_noise(2, True, None)  # the next micro-batch of the step
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, following)


def test_accumulation_matches_a_larger_batch(tmp_path, rows):
    """Steps of two rows equal steps of two accumulated micro-steps of one row (SGD, so rounding stays linear).

    Measured 3e-8 apart after moving by 4e-3; noise drawn per micro-step (before per-row noise) gave 4e-3 apart.
    """
    four = [*rows, *({**row, "prompt": row["prompt"] + " again"} for row in rows)]
    pattern = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))

    def pattern_reward(video):  # a fixed pixel pattern: gradients large enough to move the LoRA in two steps
        return 100 * (video * pattern).mean(dim=(1, 2, 3, 4))

    settings = dict(
        max_steps=2, optim="sgd", learning_rate=4.0, decode_frame_subset=2, truncated_backprop_steps=2, kl_weight=1.0
    )
    results = []
    for batch, accumulation in ((2, 1), (1, 2)):
        pipe = tiny_wan_i2v_pipeline(seed=0)
        torch.manual_seed(0)  # LoRA A
        trainer = _trainer(
            tmp_path / f"{batch}x{accumulation}",
            four,
            reward={"pattern": (pattern_reward, 1.0)},
            pipe=pipe,
            num_inference_steps=3,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            **settings,
        )
        initial = _lora(pipe)
        trainer.train()
        results.append((initial, _lora(pipe)))
    (initial, big), (initial_small, small) = results
    assert all(torch.equal(initial[k], initial_small[k]) for k in initial)
    assert max(float((big[k] - initial[k]).abs().max()) for k in big) > 100 * 1e-5  # so agreement means something
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=0, atol=1e-5, msg=name)


def test_nan_rewards_are_guarded(tmp_path, rows, caplog):
    def sometimes_nan(video):
        score = brightness(video)
        return torch.where(torch.arange(len(score)) == 0, score * float("nan"), score)

    reward = {"nan": (sometimes_nan, 1.0), "brightness": (brightness, 1.0)}
    pipe = tiny_wan_i2v_pipeline(seed=0)
    trainer = _trainer(tmp_path, rows, reward=reward, pipe=pipe, max_steps=2, per_device_train_batch_size=2)
    with caplog.at_level("WARNING"):
        trainer.train()
    logs = [log for log in trainer.state.log_history if "reward" in log]
    assert all(np.isfinite(log["loss"]) and np.isfinite(log["reward"]) for log in logs)
    assert all(log["rewards/nan/nonfinite"] == 1 for log in logs)
    assert all(np.isfinite(log["grad_norm"]) and log["grad_norm"] > 0 for log in logs)
    assert all(torch.isfinite(p).all() for p in pipe.transformer.parameters())
    assert "non-finite score" in caplog.text


class TinyFaceEmbedder(nn.Module):
    """A small random face embedder (the FaceEmbedder interface) so face tests need no downloaded weights."""

    name, input_size, alignment, embedding_dim = "tiny", 32, "box", 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, 16)

    def forward(self, chips):
        return self.fc(self.net(chips))


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    """A real face (scikit-image's astronaut), ground-truth frames that shift it, and a faceless image."""
    import skimage.data

    root = tmp_path_factory.mktemp("faces")
    astronaut = skimage.data.astronaut()
    PIL.Image.fromarray(astronaut[0:256, 96:352]).save(root / "reference.png")
    frames = root / "frames"
    frames.mkdir()
    for i in range(3):
        PIL.Image.fromarray(astronaut[4 * i : 4 * i + 240, 100 + 3 * i : 340 + 3 * i]).save(frames / f"{i:03d}.png")
    mixed = root / "mixed"
    mixed.mkdir()
    PIL.Image.fromarray(astronaut[0:240, 100:340]).save(mixed / "000.png")
    PIL.Image.fromarray(astronaut[0:200, 100:340]).save(mixed / "001.png")
    PIL.Image.fromarray(np.full((128, 128, 3), 127, np.uint8)).save(root / "blank.png")
    return root


@pytest.fixture(scope="module")
def face_reward():
    from icreward.rewards.face import FaceIdentityReward

    return FaceReward(FaceIdentityReward(TinyFaceEmbedder()))


def test_videos_without_faces_score_a_defined_value_with_zero_gradient(tmp_path, face_files, face_reward):
    rows = [
        {
            "image": str(face_files / "reference.png"),
            "prompt": "an astronaut",
            "ground_truth": str(face_files / "frames"),
        }
    ]
    pipe = tiny_wan_i2v_pipeline(seed=0)
    trainer = _trainer(tmp_path, rows, reward={"face": (face_reward, 0.1)}, pipe=pipe, max_steps=2, kl_weight=0.0)
    assert face_reward.num_pools >= 1  # built before training from the full-resolution reference and clip
    before = _params(pipe)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "reward" in log]
    # 32x32 noise videos contain no face: the reward is the no-face value, the gradient exactly zero
    assert all(log["rewards/face"] == 0.0 and log["rewards/face/faces_found_rate"] == 0.0 for log in logs)
    assert all(log["rewards/face/no_face_videos"] == 1.0 and log["grad_norm"] == 0.0 for log in logs)
    after = _params(pipe)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_bad_rows_fail_before_training(tmp_path, face_files, face_reward):
    reference, frames = str(face_files / "reference.png"), str(face_files / "frames")
    blank = [{"image": str(face_files / "blank.png"), "prompt": "a wall", "ground_truth": frames}]
    from icreward.rewards.face import FaceNotFoundError

    with pytest.raises(FaceNotFoundError, match=r"train_dataset row 0 .*blank\.png.*no detectable face"):
        _trainer(tmp_path, blank, reward=face_reward)
    mixed = [{"image": reference, "prompt": "an astronaut", "ground_truth": str(face_files / "mixed")}]
    with pytest.raises(ValueError, match=r"train_dataset row 0: cannot use ground_truth .*mixed.*240x200"):
        _trainer(tmp_path, mixed, reward=face_reward)
    missing = [{"image": str(face_files / "nope.png"), "prompt": "x"}]
    with pytest.raises(ValueError, match=r"train_dataset row 0: cannot load image .*nope\.png"):
        _trainer(tmp_path, missing, reward=brightness)
    with pytest.raises(ValueError, match="lacks column"):
        _trainer(tmp_path, [{"image": reference}])
    with pytest.raises(ValueError, match="truncated_backprop_steps"):
        _config(tmp_path, num_inference_steps=2, truncated_backprop_steps=3)
    with pytest.raises(ValueError, match="kl_step_weights"):
        _config(tmp_path, truncated_backprop_steps=1, kl_step_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="peft_config"):
        _trainer(tmp_path, [{"image": reference, "prompt": "x"}], lora=None)
    # Wan 2.2, low-noise expert trained, but the single trained step is the first (high-noise) one
    with pytest.raises(ValueError, match="trained expert's range"):
        _trainer(
            tmp_path,
            [{"image": reference, "prompt": "x"}],
            pipe=tiny_wan22_pipeline(seed=0),
            num_inference_steps=1,
            truncated_backprop_steps=1,
        )


# ---------------------------------------------------------------------------------------------------------------
# Variants, validation, saving
# ---------------------------------------------------------------------------------------------------------------


def test_wan22_trains_only_the_low_noise_expert_and_decodes_a_frame_window(tmp_path, rows):
    pipe = tiny_wan22_pipeline(seed=0)
    seen_frames = []

    def record(video):
        seen_frames.append(video.shape[1])
        return brightness(video)

    trainer = _trainer(
        tmp_path, rows, reward=record, pipe=pipe, num_inference_steps=4, max_steps=2, decode_frame_subset=2
    )
    assert set(trainer.adapter.trainable_modules) == {"transformer_2"}
    before = _params(pipe)
    trainer.train()
    after = _params(pipe)
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"transformer_2"}
    assert seen_frames == [5, 5]  # two of the three latent frames: 1 + 4 video frames (causal VAE)


def test_validation_videos_saved_lora_loads_and_changes_output(tmp_path, rows):
    trainer = _trainer(tmp_path, rows, max_steps=2, validation_steps=2, num_validation_videos=1, kl_weight=0.5)
    trainer.train()
    for step in (0, 2):
        folder = tmp_path / "out" / "validation" / f"step-{step}"
        assert (folder / "00.mp4").is_file()
        record = json.loads((folder / "rewards.json").read_text())
        assert record["step"] == step and set(record["videos"][0]["rewards"]) == {"brightness"}
    assert sum("validation/reward" in log for log in trainer.state.log_history) == 2
    assert [log["step"] for log in trainer.state.log_history if "loss" in log] == [1, 2]  # training logs kept

    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "Identity-Preserving Image-to-Video Generation" in card and "Directly Fine-Tuning Diffusion" in card
    assert "load_lora_weights" in card and "`brightness` (weight 0.1)" in card

    def generate(pipe):
        generator = torch.Generator().manual_seed(0)
        kwargs = {**TINY_DEFAULTS, "num_inference_steps": 2, "output_type": "pt"}
        return pipe(image=rows[0]["image"], prompt="a cat", generator=generator, **kwargs).frames

    pipe = tiny_wan_i2v_pipeline(seed=0)
    base = generate(pipe)
    pipe.load_lora_weights(str(out))
    tuned = generate(pipe)
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, generate(trainer.adapter.pipeline), rtol=1e-4, atol=1e-4)


def test_reward_forms_and_weights(tmp_path, rows):
    def first(video):
        return brightness(video)

    trainer = _trainer(tmp_path, rows, reward=[first, CallableReward(brightness, name="second")])
    assert trainer.reward.weights == {"first": 0.1, "second": 0.1}
    trainer = _trainer(tmp_path, rows, reward=[first, brightness], reward_weights=[1.0, 0.5])
    assert trainer.reward.weights == {"first": 1.0, "brightness": 0.5}
    combined = CombinedReward({"b": (brightness, 2.0)})
    assert _trainer(tmp_path, rows, reward=combined).reward is combined
    with pytest.raises(ValueError, match="weights are given twice"):
        _trainer(tmp_path, rows, reward={"b": (brightness, 1.0)}, reward_weights=[1.0])
    with pytest.raises(ValueError, match="2 reward_weights for 1 rewards"):
        _trainer(tmp_path, rows, reward=brightness, reward_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="not both"):
        RewardFeedbackTrainer(tiny_wan_i2v_pipeline(0), brightness, reward=brightness, args=_config(tmp_path))


def test_truncated_sampling_validates_arguments(rows):
    adapter = get_adapter(tiny_wan_i2v_pipeline(seed=0))
    conditions = adapter.prepare_conditions([rows[0]["image"]], ["a"], num_frames=9, height=32, width=32)
    noise = torch.randn(1, 16, 3, 4, 4)
    with pytest.raises(ValueError, match="num_grad_steps"):
        sample_with_truncated_backprop(adapter, noise, conditions, [1000.0, 0.0], num_grad_steps=2)
    with pytest.raises(ValueError, match="negative_conditions"):
        sample_with_truncated_backprop(adapter, noise, conditions, [1000.0, 0.0], num_grad_steps=1, guidance_scale=3)
    # guidance: the guided velocity is uncond + s * (cond - uncond)
    negative = adapter.prepare_conditions([rows[0]["image"]], [""], num_frames=9, height=32, width=32)
    with torch.no_grad():
        guided = sample_with_truncated_backprop(
            adapter, noise, conditions, [1000.0, 0.0], num_grad_steps=1, negative_conditions=negative, guidance_scale=3
        )
        t = torch.tensor([1000.0])
        cond, uncond = adapter.predict(noise, t, conditions), adapter.predict(noise, t, negative)
    torch.testing.assert_close(guided.velocities[0], uncond + 3 * (cond - uncond), rtol=1e-4, atol=1e-5)
    assert velocity_kl(guided.velocities, guided.velocities).abs().max() == 0


# ---------------------------------------------------------------------------------------------------------------
# Wan 2.2: the trained expert's LoRA loads into that expert; the frozen expert's placement
# ---------------------------------------------------------------------------------------------------------------


def _wan22_generate(pipe, image):
    latents = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return pipe(
            image=image, prompt="a cat", **TINY_DEFAULTS, num_inference_steps=4, latents=latents, output_type="latent"
        ).frames


@pytest.mark.parametrize("expert", ["low_noise", "high_noise"])
def test_wan22_lora_round_trip_through_diffusers_load_lora_weights(tmp_path, rows, expert):
    """Train one Wan 2.2 expert, save, and load the LoRA into a fresh WanImageToVideoPipeline with the diffusers
    call the model card names: the trained expert's predictions and the pipeline's samples are reproduced."""
    pipe = tiny_wan22_pipeline(seed=0)
    # 2 steps, one per expert (t = 1000 and 3 with the tiny shift-3 schedule); K = 2 reaches either expert
    trainer = _trainer(
        tmp_path, rows, pipe=pipe, wan22_train_expert=expert, truncated_backprop_steps=2, max_steps=2, kl_weight=0.0
    )
    name = {"low_noise": "transformer_2", "high_noise": "transformer"}[expert]
    assert set(trainer.adapter.trainable_modules) == {name}
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    card = (out / "README.md").read_text()
    fresh = tiny_wan22_pipeline(seed=0)
    untrained = _wan22_generate(fresh, rows[0]["image"])
    if expert == "low_noise":
        assert sorted(p.name for p in out.glob("*.safetensors")) == ["pytorch_lora_weights_transformer_2.safetensors"]
        assert 'weight_name="pytorch_lora_weights_transformer_2.safetensors"' in card
        assert "load_into_transformer_2=True" in card
        fresh.load_lora_weights(
            str(out), weight_name="pytorch_lora_weights_transformer_2.safetensors", load_into_transformer_2=True
        )
    else:
        assert sorted(p.name for p in out.glob("*.safetensors")) == ["pytorch_lora_weights.safetensors"]
        assert 'pipe.load_lora_weights("<this repo or folder>")' in card
        fresh.load_lora_weights(str(out))
    trained_module, loaded_module = getattr(pipe, name), getattr(fresh, name)
    x = torch.randn(1, 36, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    kwargs = {
        "hidden_states": x,
        "timestep": torch.tensor([950.0 if expert == "high_noise" else 500.0]),
        "encoder_hidden_states": torch.randn(1, 512, 32, generator=torch.Generator().manual_seed(6)),
        "return_dict": False,
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded_module(**kwargs)[0], trained_module(**kwargs)[0], rtol=0, atol=1e-6)
    reloaded, trained = _wan22_generate(fresh, rows[0]["image"]), _wan22_generate(pipe, rows[0]["image"])
    print(f"wan2.2 {expert} LoRA round trip: max abs diff {float((reloaded - trained).abs().max()):.3e}")
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=1e-6)
    assert float((trained - untrained).abs().max()) > 1e-4  # training changed the expert
    if expert == "low_noise":  # why the card names the call: a plain load goes into the high-noise expert
        plain = tiny_wan22_pipeline(seed=0)
        plain.load_lora_weights(str(out))
        assert getattr(plain.transformer, "peft_config", None) and not hasattr(plain.transformer_2, "peft_config")


def test_wan22_frozen_expert_on_the_device_or_offloaded_per_call(tmp_path, rows, monkeypatch):
    from icreward.trainers.adapter_lora import FrozenDenoiserOffload

    def record_moves(module, moves, *, move=True):
        original = module.to

        def to(device, *args, **kwargs):
            moves.append(str(device))
            return original(device, *args, **kwargs) if move else module

        monkeypatch.setattr(module, "to", to)

    # Default: the frozen high-noise expert is put on the training device (the Trainer moves only the trained one).
    pipe, moves = tiny_wan22_pipeline(seed=0), []
    record_moves(pipe.transformer, moves)
    trainer = _trainer(tmp_path, rows, pipe=pipe, num_inference_steps=4, kl_weight=0.0)
    assert set(trainer.adapter.frozen_denoisers) == {"transformer"} and moves == ["cpu"]
    assert not hasattr(trainer, "_frozen_offload")

    # offload_frozen_denoisers: kept on the CPU, brought in for the steps that run it, evicted before the trained one.
    pipe, moves = tiny_wan22_pipeline(seed=0), []
    record_moves(pipe.transformer, moves, move=False)  # record where it is sent; the weights stay put
    trainer = _trainer(tmp_path, rows, pipe=pipe, num_inference_steps=4, kl_weight=0.0, offload_frozen_denoisers=True)
    offload = trainer._frozen_offload
    assert isinstance(offload, FrozenDenoiserOffload) and moves == ["cpu"]
    offload.device = torch.device("meta")  # stands for the accelerator
    moves.clear()
    calls = []
    hooks = [
        pipe.transformer.register_forward_pre_hook(lambda *a: calls.append("high")),
        pipe.transformer_2.register_forward_pre_hook(lambda *a: calls.append("low")),
    ]
    _one_loss(trainer).backward()
    for hook in hooks:
        hook.remove()
    # steps in the high-noise range run the frozen expert (brought in once), the rest the trained one (evicted first)
    timesteps = trainer.adapter.sampler(4).timesteps
    expected = ["high" if bool(trainer.adapter.expert_for(t)) else "low" for t in timesteps]
    assert "high" in expected and expected[-1] == "low" and calls == expected
    assert moves == ["meta", "cpu"] and not offload.resident
    with pytest.raises(RuntimeError, match="gradients enabled"):
        pipe.transformer(
            hidden_states=torch.zeros(1, 36, 3, 4, 4),
            timestep=torch.tensor([999.0]),
            encoder_hidden_states=torch.zeros(1, 512, 32),
        )
    # Backpropagating through an offloaded expert is refused up front.
    with pytest.raises(ValueError, match="offload_frozen_denoisers=True, but 1 of the K=2 trained steps"):
        _trainer(
            tmp_path,
            rows,
            pipe=tiny_wan22_pipeline(seed=0),
            num_inference_steps=2,
            truncated_backprop_steps=2,
            offload_frozen_denoisers=True,
        )


def test_a_row_id_column_seeds_a_prompt_row_whatever_its_image_path():
    from icreward.trainers.prompt_data import prompt_row_id

    row = {"prompt": "a cat", "image": "/a/ref.png"}
    moved = {**row, "image": "/b/ref.png"}
    assert prompt_row_id(row) != prompt_row_id(moved)
    assert prompt_row_id({**row, "row_id": "r1"}) == prompt_row_id({**moved, "row_id": "r1"})
    assert prompt_row_id({**row, "row_id": "r1"}) != prompt_row_id({**row, "row_id": "r2"})
    assert prompt_row_id({**row, "row_id": None}) == prompt_row_id(row)
