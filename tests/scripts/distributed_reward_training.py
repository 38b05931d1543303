"""Worker for tests/test_distributed.py: train a tiny ICRewardModel and save its final weights.

The safetensors metadata also holds, per process, a digest of every video the frozen backbone encoded while the
trainer cached features ("encoded": a JSON list with one list of digests per process).

python tests/scripts/distributed_reward_training.py DATA_DIR OUT_FILE PER_DEVICE_BATCH
accelerate launch --multi_gpu --num_processes 2 ... tests/scripts/distributed_reward_training.py DATA_DIR OUT_FILE 2
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import load_from_disk  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from icreward import ICRewardModel, RewardModelConfig, RewardModelTrainer  # noqa: E402
from icreward.testing import tiny_icreward_config  # noqa: E402


def main(data_dir: str, out_file: str, per_device_batch: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ICRewardModel(tiny_icreward_config(num_frames=3))
    args = RewardModelConfig(
        output_dir=os.path.dirname(out_file),
        num_train_epochs=2,
        per_device_train_batch_size=per_device_batch,
        learning_rate=1e-2,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    encoded: list[str] = []
    encode_pair = model._encode_pair

    def counting_encode_pair(pixel_values, reference_pixel_values, frame_mask):
        for video, mask in zip(pixel_values, frame_mask):
            encoded.append(hashlib.sha1(video[mask].contiguous().numpy().tobytes()).hexdigest()[:16])
        return encode_pair(pixel_values, reference_pixel_values, frame_mask)

    model._encode_pair = counting_encode_pair  # counts only the feature caching done by the trainer's __init__
    trainer = RewardModelTrainer(model=model, args=args, train_dataset=load_from_disk(data_dir))
    del model._encode_pair
    trainer.train()
    if torch.distributed.is_initialized():
        per_process: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(per_process, encoded)
    else:
        per_process = [encoded]
    if trainer.is_world_process_zero():
        state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
        metadata = {"world_size": str(trainer.args.world_size), "encoded": json.dumps(per_process)}
        save_file(state, out_file, metadata=metadata)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
