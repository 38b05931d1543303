import json
import shutil
import urllib.error
import urllib.request

import pytest
import torch

from icreward.cli.human_study import main
from icreward.evaluation.best_of_n import BestOfNReport
from icreward.evaluation.human_study import (
    HumanStudy,
    load_study_results,
    summarize_study,
    wilson_interval,
)
from icreward.video import write_video

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _solid(color, frames=6, height=32, width=32, seed=0) -> torch.Tensor:
    """A video of one colour with a little moving texture (so that it is a real video, not a still)."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.tensor(color, dtype=torch.float32).view(1, 3, 1, 1).expand(frames, 3, height, width).clone()
    video += 20 * (torch.rand(frames, 1, height, width, generator=generator) - 0.5)
    return video.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture
def study_pairs(tmp_path):
    """Three pairs in every media form the study accepts. ICReward's video is red and the MLP's blue in every pair,
    and pair 2 lists the MLP as model A, so a rater who always picks the red video always picks ICReward."""
    from PIL import Image

    Image.new("RGB", (40, 32), (200, 120, 40)).save(tmp_path / "ref0.png")
    write_video(tmp_path / "icr0.mp4", _solid(RED))
    write_video(tmp_path / "mlp0.mp4", _solid(BLUE))
    write_video(tmp_path / "mlp1", _solid(BLUE, seed=1))  # a folder of PNG frames: transcoded to mp4
    return [
        dict(sample_id="scarf", reference=str(tmp_path / "ref0.png"), video_a=str(tmp_path / "icr0.mp4"),
             video_b=str(tmp_path / "mlp0.mp4"), label_a="ICReward", label_b="MLP", prompt="a person with a scarf"),
        dict(sample_id="foliage", reference=torch.full((3, 32, 32), 90, dtype=torch.uint8),
             video_a=_solid(RED, height=33, width=35, seed=2), video_b=str(tmp_path / "mlp1"),
             label_a="ICReward", label_b="MLP"),
        dict(sample_id="coffee", reference=str(tmp_path / "ref0.png"), video_a=str(tmp_path / "mlp0.mp4"),
             video_b=str(tmp_path / "icr0.mp4"), label_a="MLP", label_b="ICReward", prompt="coffee pouring"),
    ]  # fmt: skip


def _post(url, payload):
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions and the server API
# ---------------------------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_closed_form():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low99, high99 = wilson_interval(8, 10, confidence=0.99)
    assert low99 < low and high99 > high
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_trial_order_and_sides_are_seeded_per_rater(tmp_path):
    pairs = [
        dict(sample_id=f"s{i}", reference=torch.zeros(3, 8, 8, dtype=torch.uint8), video_a=_solid(RED, 2, 8, 8),
             video_b=_solid(BLUE, 2, 8, 8), label_a="A", label_b="B")
        for i in range(16)
    ]  # fmt: skip
    study = HumanStudy(pairs, tmp_path / "results.jsonl", seed=1)
    alice = study.trials_for("alice")
    assert alice == HumanStudy(pairs, tmp_path / "other.jsonl", seed=1).trials_for("alice")  # reproducible
    assert sorted(t.pair_index for t in alice) == list(range(16))
    assert [t.pair_index for t in alice] != list(range(16))  # shuffled
    assert [t.pair_index for t in alice] != [t.pair_index for t in study.trials_for("bob")]
    assert {t.left for t in alice} == {"a", "b"}
    assert alice != HumanStudy(pairs, tmp_path / "r.jsonl", seed=2).trials_for("alice")
    in_order = HumanStudy(pairs, tmp_path / "r.jsonl", seed=1, shuffle=False).trials_for("alice")
    assert [t.pair_index for t in in_order] == list(range(16))
    with pytest.raises(ValueError, match="rater ID"):
        study.trials_for("../etc")


def test_server_api_records_maps_and_validates(study_pairs, tmp_path):
    results = tmp_path / "results.jsonl"
    study = HumanStudy(study_pairs, results, seed=0)
    with study.serve() as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, payload = _post(server.url + "api/answer", {"rater_id": "bob", "trial_index": 0, "choice": "up"})
        assert status == 400 and "choice" in payload["error"]
        assert _post(server.url + "api/answer", {"rater_id": "bob", "trial_index": 3, "choice": "left"})[0] == 400
        assert _post(server.url + "api/answer", {"rater_id": "", "trial_index": 0, "choice": "left"})[0] == 400

        status, _, body = _get(server.url + "api/trials?rater=bob")
        trials = json.loads(body)["trials"]
        assert status == 200 and len(trials) == 3 and not any(t["answered"] for t in trials)
        # the model names never reach the browser
        assert "ICReward" not in body.decode() and "MLP" not in body.decode()

        for trial in study.trials_for("bob"):  # bob always clicks left
            status, payload = _post(server.url + "api/answer", {"rater_id": "bob", "trial_index": trial.trial_index,
                                                                "choice": "left", "response_time_s": 1.5})  # fmt: skip
            assert status == 200, payload
            assert len(_lines(results)) == trial.trial_index + 1  # on disk before the reply
        status, payload = _post(server.url + "api/answer", {"rater_id": "bob", "trial_index": 0, "choice": "right"})
        assert status == 409 and "already answered" in payload["error"]
        assert all(t["answered"] for t in json.loads(_get(server.url + "api/trials?rater=bob")[2])["trials"])

        # media: byte ranges (needed by <video> in Safari), unknown tokens, and the bytes of a served file
        video_url = server.url + trials[0]["left"].lstrip("/")
        status, headers, full = _get(video_url)
        assert status == 200 and headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
        status, headers, part = _get(video_url, {"Range": "bytes=10-19"})
        assert status == 206 and part == full[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(full)}"
        assert _get(video_url, {"Range": "bytes=-5"})[2] == full[-5:]
        assert _get(video_url, {"Range": f"bytes={len(full)}-"})[0] == 416
        assert _get(server.url + "media/nope.mp4")[0] == 404
        assert _post(server.url + "api/feedback", {"rater_id": "bob", "comment": "x" * 70000})[0] == 413
    with pytest.raises(urllib.error.URLError):  # shut down
        urllib.request.urlopen(server.url + "api/config", timeout=5)

    rows = _lines(results)
    for row, trial in zip(rows, study.trials_for("bob")):
        pair = study_pairs[trial.pair_index]
        assert row["pair_index"] == trial.pair_index and row["sample_id"] == pair["sample_id"]
        assert row["choice_side"] == "left" and row["choice"] == trial.left
        assert row["chosen_label"] == pair[f"label_{trial.left}"]
        assert row["response_time_s"] == 1.5

    # a restarted study resumes from the file and keeps refusing repeated answers
    again = HumanStudy(study_pairs, results, seed=0)
    assert again.answered_pairs("bob") == {0, 1, 2}
    with pytest.raises(RuntimeError, match="already answered"):
        again.record_answer("bob", 1, "right")
    # another study's answers never mix into this file
    with pytest.raises(ValueError, match="another study"):
        HumanStudy(study_pairs[:2], results)


def test_results_dataset_summary_plot_and_cli(study_pairs, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    study = HumanStudy(study_pairs, results, seed=0)
    for rater in ("r1", "r2", "r3"):
        for trial in study.trials_for(rater):
            pair = study_pairs[trial.pair_index]
            # everybody prefers ICReward, except r3 on "coffee"
            wants = "MLP" if (rater == "r3" and pair["sample_id"] == "coffee") else "ICReward"
            side = "left" if pair[f"label_{trial.left}"] == wants else "right"
            study.record_answer(rater, trial.trial_index, side, comment="subject kept" if rater == "r1" else "")
    study.record_feedback("r1", "background drift mattered most")
    with results.open("a") as f:
        f.write('{"kind": "choice", "rater_')  # a write cut short by a crash

    dataset = load_study_results(results)
    assert dataset.num_rows == 10
    assert dataset.filter(lambda r: r["kind"] == "choice").num_rows == 9
    assert set(dataset.filter(lambda r: r["kind"] == "choice")["chosen_label"]) == {"ICReward", "MLP"}

    summary = summarize_study(results)
    assert summary["labels"] == ["ICReward", "MLP"]
    assert (summary["num_choices"], summary["num_raters"], summary["num_samples"]) == (9, 3, 3)
    overall = summary["overall"]["preferences"]
    assert (overall["ICReward"]["wins"], overall["ICReward"]["n"]) == (8, 9)
    assert (overall["ICReward"]["ci_low"], overall["ICReward"]["ci_high"]) == pytest.approx(wilson_interval(8, 9))
    assert overall["MLP"]["share"] == pytest.approx(1 / 9)
    assert summary["overall"]["p_value"] == pytest.approx(20 / 512)  # exact two-sided binomial: 2 * P(X >= 8)
    assert summary["per_sample"]["coffee"]["preferences"]["ICReward"]["wins"] == 2
    assert summary["per_sample"]["scarf"]["preferences"]["ICReward"]["share"] == 1.0
    assert len(summary["comments"]) == 3 and summary["feedback"][0]["comment"] == "background drift mattered most"
    assert summary["per_rater"] == {"r1": 3, "r2": 3, "r3": 3}

    assert main(["summarize", "--results", str(results), "--output_dir", str(tmp_path / "summary")]) == 0
    assert "| **overall** | 9 | 88.9%" in capsys.readouterr().out
    for name in ("summary.json", "summary.md", "preference.png"):
        assert (tmp_path / "summary" / name).stat().st_size > 0
    assert (tmp_path / "summary" / "preference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # plot_study_summary
    assert json.loads((tmp_path / "summary" / "summary.json").read_text())["overall"]["n"] == 9


def test_cli_builds_pairs_from_a_best_of_n_report(tmp_path):
    report = BestOfNReport(
        methods=["ICReward", "MLP"],
        sample_ids=["s0", "s1"],
        video_ids=[["c0", "c1"], ["c0", "c1"]],
        video_paths=[["/v/s0_0.mp4", "/v/s0_1.mp4"], ["/v/s1_0.mp4", "/v/s1_1.mp4"]],
        reference_paths=["/v/s0.png", "/v/s1.png"],
        prompts=["p0", None],
        selections={"ICReward": [1, 0], "MLP": [0, 0]},
        selector_scores={"ICReward": None, "MLP": None},
        candidate_metrics={},
        summary={"ICReward": {}, "MLP": {}},
        all_candidates={},
        higher_is_better={},
    )
    report.to_json(tmp_path / "report.json")
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", "--report", str(tmp_path / "report.json"), "--method_a", "ICReward", "--method_b", "MLP",
                 "--output", str(out)]) == 0  # fmt: skip
    rows = _lines(out)
    assert rows == [
        {"sample_id": "s0", "reference": "/v/s0.png", "prompt": "p0", "video_a": "/v/s0_1.mp4",
         "video_b": "/v/s0_0.mp4", "label_a": "ICReward", "label_b": "MLP"}
    ]  # fmt: skip


def test_pairs_are_validated(study_pairs, tmp_path):
    with pytest.raises(ValueError, match="compares 'MLP' with itself"):
        HumanStudy([{**study_pairs[0], "label_a": "MLP"}], tmp_path / "r.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        HumanStudy([{**study_pairs[0], "video_b": str(tmp_path / "missing.mp4")}], tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match=r"no \['label_b'\]"):
        HumanStudy([{k: v for k, v in study_pairs[0].items() if k != "label_b"}], tmp_path / "r.jsonl")
    # a pairs file with paths relative to itself
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({**study_pairs[0], "reference": "ref0.png", "video_a": "icr0.mp4", "video_b": "mlp0.mp4"}) + "\n"
    )
    study = HumanStudy(tmp_path / "pairs.jsonl", tmp_path / "r.jsonl")
    assert study.pairs[0].video_a == str(tmp_path / "icr0.mp4")
    # a datasets.Dataset of pairs (e.g. pushed to the Hub next to the videos)
    from datasets import Dataset

    study = HumanStudy(Dataset.from_list([study_pairs[0], study_pairs[2]]), tmp_path / "r2.jsonl")
    assert [p.sample_id for p in study.pairs] == ["scarf", "coffee"] and study.pairs[1].label_a == "MLP"


# ---------------------------------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------------------------------

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run"
).split()

# Mean colour of the current frame of a <video>, read through a canvas: what the rater actually sees.
_VIDEO_COLOUR_JS = """
const video = document.getElementById(arguments[0]);
const canvas = document.createElement("canvas");
canvas.width = 8; canvas.height = 8;
const context = canvas.getContext("2d");
context.drawImage(video, 0, 0, 8, 8);
const pixels = context.getImageData(0, 0, 8, 8).data;
const sum = [0, 0, 0];
for (let i = 0; i < pixels.length; i += 4) { sum[0] += pixels[i]; sum[1] += pixels[i + 1]; sum[2] += pixels[i + 2]; }
return sum.map((v) => v / 64);
"""


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, (
        "chromium is installed but chromedriver is not (Debian/Ubuntu: apt-get install chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_rater_session_in_headless_chromium(browser, study_pairs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results = tmp_path / "results.jsonl"
    study = HumanStudy(study_pairs, results, seed=0, title="Consistency study")
    wait = WebDriverWait(browser, 30)
    with study.serve() as server:
        browser.get(server.url)
        wait.until(lambda d: d.find_element(By.ID, "title").text == "Consistency study")
        browser.find_element(By.ID, "rater-id").send_keys("alice")
        browser.find_element(By.ID, "start").click()

        for number in range(3):
            wait.until(lambda d: d.find_element(By.ID, "trial-screen").is_displayed())
            # the reference image and both videos are loaded and decodable (mp4 plays in this browser)
            wait.until(lambda d: d.execute_script("return document.getElementById('reference').naturalWidth") > 0)
            for side in ("left", "right"):
                wait.until(
                    lambda d, s=side: d.execute_script(f"return document.getElementById('video-{s}').readyState") >= 2
                )
                assert browser.execute_script(f"return document.getElementById('video-{side}').error") is None
                assert not browser.find_element(By.ID, f"error-{side}").is_displayed()
            trial = study.trials_for("alice")[number]
            prompt = study_pairs[trial.pair_index].get("prompt")
            assert browser.find_element(By.ID, "prompt").text == (f"Prompt: {prompt}" if prompt else "")
            # pick the video that looks red on screen: ICReward's, whatever side the study put it on
            colours = {side: browser.execute_script(_VIDEO_COLOUR_JS, f"video-{side}") for side in ("left", "right")}
            red_side = max(colours, key=lambda s: colours[s][0] - colours[s][2])
            assert colours[red_side][0] > 150 and colours[red_side][2] < 100, colours
            assert browser.find_element(By.ID, "submit").get_attribute("disabled") is not None  # no choice yet
            browser.find_element(By.ID, f"choose-{red_side}").click()
            if number == 0:
                browser.find_element(By.ID, "comment").send_keys("the scarf keeps its colour")
            browser.find_element(By.ID, "submit").click()
            wait.until(lambda d, n=number: d.find_element(By.ID, "progress").text == f"alice · {n + 1} / 3")
            assert len(_lines(results)) == number + 1  # flushed per answer

        wait.until(lambda d: d.find_element(By.ID, "done-screen").is_displayed())
        browser.find_element(By.ID, "feedback").send_keys("ICReward kept the subject better")
        browser.find_element(By.ID, "send-feedback").click()
        wait.until(lambda d: "saved" in d.find_element(By.ID, "feedback-status").text)

        # coming back with the same ID resumes: nothing is left to answer
        browser.get(server.url + "?rater=alice")
        wait.until(lambda d: d.find_element(By.ID, "done-screen").is_displayed())
        assert browser.find_element(By.ID, "progress").text == "alice · 3 / 3"

    rows = _lines(results)
    choices = [r for r in rows if r["kind"] == "choice"]
    assert [r["chosen_label"] for r in choices] == ["ICReward"] * 3  # left/right mapped back to the models
    assert [r["choice"] for r in choices] == [
        "a" if study_pairs[r["pair_index"]]["label_a"] == "ICReward" else "b" for r in choices
    ]
    assert choices[0]["comment"] == "the scarf keeps its colour" and choices[1]["comment"] == ""
    assert all(r["response_time_s"] > 0 for r in choices)
    assert rows[-1] == {
        **rows[-1],
        "kind": "feedback",
        "rater_id": "alice",
        "comment": "ICReward kept the subject better",
    }

    summary = summarize_study(load_study_results(results))
    assert summary["overall"]["preferences"]["ICReward"] == {
        "wins": 3, "n": 3, "share": 1.0, "ci_low": pytest.approx(wilson_interval(3, 3)[0]), "ci_high": 1.0
    }  # fmt: skip
    assert summary["left"]["wins"] == sum(r["choice_side"] == "left" for r in choices)
    assert summary["feedback"] == [{"rater_id": "alice", "comment": "ICReward kept the subject better"}]
