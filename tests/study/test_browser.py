"""One participant through every page of the study in a real browser (playwright + Debian's chromium):
the AI disclosure, the recovery code, a tutor outage in the middle of the chat (the message is kept and
"Try again" works), the last reply readable before moving on, the debriefing, and withdrawal."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from culturepark.engine.log import read_log
from tests.conftest import free_port, write_hofstede
from tests.study.test_server import Server, study


class Tutor:
    """The sim server on a fixed port, so that it can go down and come back at the same address."""

    def __init__(self, port):
        self.proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "sim-server", "--port", str(port),
                                      "--seed", "2", "--latency-ms", "150", "--stream-chunk-ms", "60"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + self.proc.stderr.read()

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_a_participant_goes_through_every_page_with_an_outage_and_withdraws(tmp_path, tiny_data, chromium):
    from playwright.sync_api import sync_playwright

    write_hofstede(tiny_data)
    port = free_port()
    tutor = Tutor(port)
    spec = study("http://unused.invalid/v1")
    for arm in spec["arms"]:
        arm.pop("base_url")  # the tutors' server comes from `study serve --base-url`
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    shots = Path(os.environ.get("CULTUREPARK_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    server = Server(scenario, out, tiny_data, "--base-url", f"http://127.0.0.1:{port}/v1")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(server.url)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
            phone.screenshot(path=shots / "0-consent-phone.png", full_page=True)
            page = browser.new_page(viewport={"width": 900, "height": 900})
            blocked = []  # the CSP allows exactly the pages' own inline script and style: nothing is blocked
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(server.url)
            assert "is not a real person. It is an AI" in page.inner_text("p.ai")
            assert "IRB-2026-001" in page.inner_text("body") and "about 20 minutes" in page.inner_text("body")
            assert "I understand that my conversation partner is an AI" in page.inner_text("label:has(input[name=consent])")
            page.screenshot(path=shots / "1-consent.png", full_page=True)
            page.click("button[type=submit]")  # without ticking the box
            assert "tick the box" in page.inner_text(".error")
            page.check("input[name=age]")
            page.check("input[name=consent]")
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Your recovery code"
            code = page.inner_text("p.code")
            page.screenshot(path=shots / "2-recovery-code.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Survey (before)"
            radios = page.locator("input[type=radio][value='3']")
            assert radios.count() == 24
            for i in range(radios.count()):  # one left out: the page names it and keeps the rest
                if i != 6:
                    radios.nth(i).check()
            page.click("button[type=submit]")
            assert "question 7 is not answered yet" in page.inner_text(".error")
            assert page.locator(".q.missing").count() == 1
            assert page.locator("input[type=radio][value='3']:checked").count() == 23
            page.screenshot(path=shots / "3-pre-test-unanswered.png", full_page=True)
            radios.nth(6).check()
            page.click("button[type=submit]")
            assert page.inner_text("h1").startswith("Chat with")
            assert "is not a real person. It is an AI" in page.inner_text("p.ai")
            page.fill("textarea[name=message]", "What do families do together on weekends?")
            page.click("button[type=submit]")
            page.wait_for_selector(".msg.tutor.pending span:not(:empty)")  # the reply appears as it is written
            page.screenshot(path=shots / "4-chat-streaming.png", full_page=True)
            page.wait_for_selector(".msg.tutor:not(.pending)")  # then the page is rendered again from the log
            assert "(AI):" in page.inner_text(".msg.tutor")

            tutor.stop()  # the tutor's server goes down in the middle of the chat
            page.fill("textarea[name=message]", "Is that different in the cities?")
            page.click("button[type=submit]")
            page.wait_for_selector("button:has-text('Try again')")
            notice = page.inner_text(".notice")
            assert "could not reply just now" in notice and "Your message is saved" in notice
            assert "Error" not in notice and "connection" not in notice.lower()  # plain words, not a code
            assert "Is that different in the cities?" in page.inner_text(".msg.you >> nth=1")
            page.screenshot(path=shots / "5-chat-outage.png", full_page=True)
            tutor = Tutor(port)  # back at the same address
            page.click("button:has-text('Try again')")
            page.wait_for_selector("button:has-text('Continue to the survey')")
            assert page.locator(".msg.tutor").count() == 2  # the last reply is on screen, and stays there
            last_reply = page.inner_text(".msg.tutor >> nth=1")
            page.screenshot(path=shots / "6-chat-last-reply.png", full_page=True)
            page.reload()
            assert page.inner_text(".msg.tutor >> nth=1") == last_reply
            page.click("button:has-text('Continue to the survey')")
            assert page.inner_text("h1") == "Survey (after)"
            for i in range(24):
                page.locator("input[type=radio][value='4']").nth(i).check()
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "About the conversation"
            for i in range(4):
                page.locator("input[type=radio][value='5']").nth(i).check()
            page.fill("textarea[name=free]", "Weekends are for family.")
            page.screenshot(path=shots / "7-questionnaire.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "Thank you!"
            assert "was an AI, not a person" in page.inner_text("body")
            page.screenshot(path=shots / "8-thanks-debriefing.png", full_page=True)
            page.click("footer a:has-text('Withdraw from the study')")
            page.screenshot(path=shots / "9-withdraw.png", full_page=True)
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "You have withdrawn"
            page.screenshot(path=shots / "10-withdrawn.png", full_page=True)
            page.goto(server.admin)  # the sign-in form: the token is posted, never put in the URL
            page.fill("input[name=token]", server.token)
            page.screenshot(path=shots / "12-admin-sign-in.png", full_page=True)
            page.click("button[type=submit]")
            assert "token" not in page.url and "1 participant;" in page.inner_text("body")
            assert "<li>none</li>" in page.content()  # the participant's own browser sent nothing that was refused
            page.screenshot(path=shots / "11-admin.png", full_page=True)
            assert blocked == []
            browser.close()
    finally:
        server.stop()
        tutor.stop()
    records = read_log(out).records
    turns = [r for r in records if r.type == "turn"]
    assert [t.index for t in turns] == list(range(57))
    learner = [t.text for t in turns if t.role == "learner"]
    assert learner[:24] == ["3"] * 24 and learner[24] == "What do families do together on weekends?"
    assert learner[25] == "Is that different in the cities?"  # typed during the outage, kept once
    assert learner[-5:] == ["5", "5", "5", "5", "Weekends are for family."]
    assert [r.type for r in records if r.type in ("end", "withdrawal")] == ["end", "withdrawal"]
    assert code.replace("-", "") not in (out / "log.jsonl").read_text()
