"""RewardFeedbackTrainer warns once per reward when a reward finds no face in a whole training batch."""

import logging

from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer


def test_warns_once_per_reward_when_a_whole_batch_has_no_face(caplog):
    trainer = RewardFeedbackTrainer.__new__(RewardFeedbackTrainer)  # only the warning's state is needed
    trainer._warned_no_reward_signal = set()
    with caplog.at_level(logging.WARNING, logger="icreward.trainers.reward_feedback_trainer"):
        trainer._warn_no_reward_signal({"face/no_face_videos": 1.0, "face/faces_found_rate": 0.5}, batch_size=2)
        assert not caplog.records  # one video had a face: there is a signal
        for _ in range(3):
            trainer._warn_no_reward_signal({"face/no_face_videos": 2.0, "face/faces_found_rate": 0.0}, batch_size=2)
    assert len(caplog.records) == 1
    assert "'face' found no face in any of the 2 generated videos" in caplog.records[0].getMessage()
