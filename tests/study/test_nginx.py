"""The study behind a real TLS-terminating reverse proxy (Debian's nginx, a self-signed certificate),
in a real browser (Debian's chromium): consent → chat → withdrawal (issue 35, finding 3).

The nginx configuration is the one docs/study-app/README.md gives (`NGINX_SITE`), with the test's
ports and certificate filled in."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from culturepark.engine.log import read_log
from tests.conftest import free_port, run_cli, write_hofstede
from tests.study.test_server import Server, study

DOCS = Path(__file__).parents[2] / "docs" / "study-app" / "README.md"


def nginx_site() -> str:
    """The server block from the docs (between the ```nginx fence and its end)."""
    text = DOCS.read_text()
    start = text.index("```nginx\n") + len("```nginx\n")
    return text[start:text.index("```", start)]


class Nginx:
    """nginx in the foreground with its own prefix: the docs' site, TLS with a self-signed certificate."""

    def __init__(self, root: Path, port: int, upstream: int):
        self.root = root
        for sub in ("logs", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        site = (nginx_site().replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
                .replace("server_name study.example.org;", "server_name localhost;")
                .replace("/etc/ssl/study/fullchain.pem", str(root / "cert.pem"))
                .replace("/etc/ssl/study/privkey.pem", str(root / "key.pem"))
                .replace("127.0.0.1:8800", f"127.0.0.1:{upstream}"))
        conf = root / "nginx.conf"
        conf.write_text(f"""user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log stderr crit;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {root}/tmp/body; proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fcgi; uwsgi_temp_path {root}/tmp/uwsgi; scgi_temp_path {root}/tmp/scgi;
  {site}
}}
""")
        check = subprocess.run(["nginx", "-t", "-p", str(root), "-c", str(conf)], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(["nginx", "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(100):  # bounded: until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read()
                time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_consent_chat_and_withdrawal_through_nginx_with_tls_in_chromium(tmp_path, tiny_data, sim_process, chromium,
                                                                       nginx):
    from playwright.sync_api import sync_playwright

    write_hofstede(tiny_data)
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(sim_process("--seed", "2", "--stream-chunk-ms", "40"))))
    out = tmp_path / "run"
    upstream, port = free_port(), free_port()
    server = Server(scenario, out, tiny_data, "--port", str(upstream), "--trusted-proxy", "127.0.0.1")
    proxy = Nginx(tmp_path / "nginx", port, upstream)
    shots = Path(os.environ.get("CULTUREPARK_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    url = f"https://localhost:{port}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 900})
            page = context.new_page()
            blocked = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            first = page.goto(url)
            headers = first.headers
            assert headers["strict-transport-security"].startswith("max-age=")
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "nginx/" not in headers.get("server", "") and "aiohttp" not in headers.get("server", "")
            page.check("input[name=age]")
            page.check("input[name=consent]")
            page.click("button[type=submit]")  # a form post with Origin https://localhost:PORT: accepted
            assert page.inner_text("h1") == "Your recovery code"
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["cp_session"]["secure"] and cookies["cp_session"]["httpOnly"]
            page.screenshot(path=shots / "nginx-1-recovery-code.png", full_page=True)
            page.click("button[type=submit]")
            radios = page.locator("input[type=radio][value='3']")
            for i in range(radios.count()):
                radios.nth(i).check()
            page.click("button[type=submit]")
            assert page.inner_text("h1").startswith("Chat with")
            page.fill("textarea[name=message]", "What do families do together on weekends?")
            page.click("button[type=submit]")
            page.wait_for_selector(".msg.tutor.pending span:not(:empty)")  # streamed through the proxy
            page.wait_for_selector(".msg.tutor:not(.pending)")
            page.screenshot(path=shots / "nginx-2-chat.png", full_page=True)
            page.click("footer a:has-text('Withdraw from the study')")
            page.click("button[type=submit]")
            assert page.inner_text("h1") == "You have withdrawn"
            page.screenshot(path=shots / "nginx-3-withdrawn.png", full_page=True)
            pid = page.url.rstrip("/").rsplit("/", 1)[1]
            assert blocked == []
            browser.close()
    finally:
        proxy.stop()
        server.stop()
    records = read_log(out).records
    assert [r.type for r in records].count("withdrawal") == 1
    assert [r.text for r in records if r.type == "turn" and r.role == "learner"][-1] == \
        "What do families do together on weekends?"
    erased = run_cli("study", "erase", str(out), "--participant", pid)  # then the participant asks for erasure
    assert erased.returncode == 0, erased.stderr
    grep = subprocess.run(["grep", "-r", "-l", pid, str(out)], capture_output=True, text=True)
    assert grep.returncode == 1, grep.stdout
    assert not any(r.type in ("participant", "turn", "withdrawal") for r in read_log(out).records)
    logs = list((tmp_path / "nginx" / "logs").glob("*"))
    assert all("/p/p-" not in f.read_text() for f in logs)  # nginx kept no participant paths
