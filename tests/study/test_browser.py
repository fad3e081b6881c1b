"""One participant through every page of the study in a real browser (playwright + Debian's chromium)."""
import os
from pathlib import Path

import yaml

from culturepark.engine.log import read_log
from tests.conftest import write_hofstede
from tests.study.test_server import Server, study


def test_a_participant_goes_through_every_page_and_a_reload_loses_nothing(tmp_path, tiny_data, sim_process, chromium):
    from playwright.sync_api import sync_playwright

    write_hofstede(tiny_data)
    url = sim_process("--seed", "2", "--latency-ms", "150", "--stream-chunk-ms", "60")
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(url)))
    out = tmp_path / "run"
    shots = Path(os.environ.get("CULTUREPARK_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    server = Server(scenario, out, tiny_data)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(server.url)
            page.screenshot(path=shots / "1-consent.png", full_page=True)
            page.click("button[type=submit]")  # without ticking the box
            assert "tick the box" in page.inner_text(".error")
            page.check("input[name=consent]")
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Survey (before)"
            radios = page.locator("input[type=radio][value='3']")
            assert radios.count() == 24
            for i in range(radios.count() - 1):  # one left out: the page says so and keeps the rest
                radios.nth(i).check()
            page.click("button[type=submit]")
            assert "1 not answered yet" in page.inner_text(".error")
            assert page.locator("input[type=radio][value='3']:checked").count() == 23
            radios.nth(23).check()
            page.screenshot(path=shots / "2-pre-test.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1").startswith("Chat with")
            page.click("button[type=submit]")  # nothing written yet: refused on the page, nothing sent on
            page.wait_for_selector("p.error")
            assert "write a question" in page.inner_text("p.error") and page.locator(".msg").count() == 0
            assert page.is_enabled("button[type=submit]")
            page.fill("textarea[name=message]", "What do families do together on weekends?")
            page.click("button[type=submit]")
            page.wait_for_selector(".msg.tutor.pending span:not(:empty)")  # the reply appears as it is written
            partial = page.inner_text(".msg.tutor.pending span")
            page.screenshot(path=shots / "3-chat-streaming.png", full_page=True)
            page.wait_for_selector(".msg.tutor:not(.pending)")  # then the page is rendered again from the log
            assert page.inner_text(".msg.tutor").split(": ", 1)[1].startswith(partial.strip())
            page.screenshot(path=shots / "3-chat.png", full_page=True)
            page.reload()  # in the middle of the chat: everything is still there
            assert page.locator(".msg").count() == 2 and "Message 2 of 2" in page.inner_text(".progress")
            assert "weekends" in page.inner_text(".msg.you")
            page.fill("textarea[name=message]", "Is that different in the cities?")
            page.click("button[type=submit]")
            page.wait_for_selector("h1:text-is('Survey (after)')")
            for i in range(24):
                page.locator("input[type=radio][value='4']").nth(i).check()
            page.screenshot(path=shots / "4-post-test.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "About the conversation"
            for i in range(4):
                page.locator("input[type=radio][value='5']").nth(i).check()
            page.fill("textarea[name=free]", "Weekends are for family.")
            page.screenshot(path=shots / "5-questionnaire.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Thank you!"
            page.screenshot(path=shots / "6-thanks.png", full_page=True)
            page.goto(server.admin)
            assert "1 participant;" in page.inner_text("body")
            page.screenshot(path=shots / "7-admin.png", full_page=True)
            browser.close()
    finally:
        server.stop()
    records = read_log(out).records
    turns = [r for r in records if r.type == "turn"]
    assert [t.index for t in turns] == list(range(57))
    learner = [t.text for t in turns if t.role == "learner"]
    assert learner[:24] == ["3"] * 24 and learner[24] == "What do families do together on weekends?"
    assert learner[-5:] == ["5", "5", "5", "5", "Weekends are for family."]
    ends = [r for r in records if r.type == "end"]
    assert len(ends) == 1 and ends[0].meta["learners"] == "human"
