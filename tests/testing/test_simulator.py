import aiohttp
import orjson

from culturepark.testing.simulator import ScriptRule
from tests.conftest import sim_stats_async


async def _post(url, path, body):
    async with aiohttp.ClientSession() as s, s.post(url + path, data=orjson.dumps(body)) as r:
        return r.status, dict(r.headers), orjson.loads(await r.read())


async def test_replies_are_deterministic_and_usage_is_counted(sim):
    url = await sim(seed=3)
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}
    s1, _, a = await _post(url, "/chat/completions", body)
    s2, _, b = await _post(url, "/chat/completions", body)
    assert s1 == s2 == 200
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"]["prompt_tokens"] > 0 and a["usage"]["completion_tokens"] <= 50
    other = {**body, "messages": [{"role": "user", "content": "something else"}]}
    _, _, c = await _post(url, "/chat/completions", other)
    assert c["choices"][0]["message"]["content"] != a["choices"][0]["message"]["content"]


async def test_over_the_limit_answers_429_with_retry_after(sim):
    url = await sim(rpm=120, window_s=1.0)  # 2 per 1 s window
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    statuses = [(await _post(url, "/chat/completions", body))[:2] for _ in range(4)]
    assert [s for s, _ in statuses] == [200, 200, 429, 429]
    assert float(statuses[2][1]["Retry-After"]) >= 1 and int(statuses[2][1]["retry-after-ms"]) > 0
    stats = await sim_stats_async(url)
    assert stats["rate_limited"] == 2 and stats["ok"] == 2


async def test_admission_charge_counts_max_tokens(sim):
    url = await sim(tpm=6000, window_s=1.0)  # 100 tokens per window
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 80}
    assert (await _post(url, "/chat/completions", body))[0] == 200
    assert (await _post(url, "/chat/completions", body))[0] == 429  # 80 + prompt > what is left


async def test_script_rules_and_completions_stop(sim):
    url = await sim(script=[ScriptRule(pattern=r"verify: (\w+)", reply=r"Entail because \1")])
    _, _, a = await _post(url, "/chat/completions",
                          {"model": "m", "messages": [{"role": "user", "content": "please verify: cats"}]})
    assert a["choices"][0]["message"]["content"] == "Entail because cats"
    _, _, b = await _post(url, "/completions", {"model": "m", "prompt": "Wei:", "max_tokens": 60, "stop": ["e"]})
    assert "e" not in b["choices"][0]["text"]


async def test_embeddings_are_deterministic_unit_vectors(sim):
    url = await sim()
    _, _, a = await _post(url, "/embeddings", {"model": "e", "input": ["a", "b", "a"]})
    vecs = [d["embedding"] for d in a["data"]]
    assert vecs[0] == vecs[2] != vecs[1]
    assert abs(sum(v * v for v in vecs[0]) - 1.0) < 1e-9


async def _upload(url, content: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", content, filename="in.jsonl")
    async with aiohttp.ClientSession() as s, s.post(url + "/files", data=form) as r:
        return (await r.json())["id"]


async def _get(url, path):
    async with aiohttp.ClientSession() as s, s.get(url + path) as r:
        return r.status, await r.read()


def _line(i: int, url_path: str = "/v1/chat/completions") -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 20}
    return orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": url_path, "body": body}) + b"\n"


async def test_batches_are_answered_after_their_delay_refused_when_malformed_and_cancellable(sim):
    url = await sim(seed=1, batch_delay_s=0.0)
    good = await _upload(url, b"".join(_line(i) for i in range(3)))
    status, _, batch = await _post(url, "/batches", {"input_file_id": good, "endpoint": "/v1/chat/completions"})
    assert status == 200 and batch["status"] == "in_progress" and batch["request_counts"]["total"] == 3
    _, raw = await _get(url, f"/batches/{batch['id']}")
    done = orjson.loads(raw)
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    _, out = await _get(url, f"/files/{done['output_file_id']}/content")
    rows = [orjson.loads(x) for x in out.splitlines()]
    assert [r["custom_id"] for r in rows] == ["r0", "r1", "r2"]
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["choices"] for r in rows)
    # the same request again is answered the same, and counted as paid twice
    again = await _upload(url, _line(0))
    await _post(url, "/batches", {"input_file_id": again, "endpoint": "/v1/chat/completions"})
    _, raw = await _get(url.removesuffix("/v1"), "/stats")
    assert orjson.loads(raw)["batch_lines_repeated"] == 1

    bad = await _upload(url, _line(0, "/v1/embeddings"))
    _, _, refused = await _post(url, "/batches", {"input_file_id": bad, "endpoint": "/v1/chat/completions"})
    assert refused["status"] == "failed" and "line 1" in refused["errors"]["data"][0]["message"]
    status, _, _missing = await _post(url, "/batches", {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"})
    assert status == 404

    slow = await sim(seed=1, batch_delay_s=60.0)
    fid = await _upload(slow, _line(5))
    _, _, pending = await _post(slow, "/batches", {"input_file_id": fid, "endpoint": "/v1/chat/completions"})
    _, _, cancelled = await _post(slow, f"/batches/{pending['id']}/cancel", {})
    assert cancelled["status"] == "cancelled" and cancelled["output_file_id"] is None
    _, listing = await _get(slow, "/batches?limit=1")
    page = orjson.loads(listing)
    assert [b["id"] for b in page["data"]] == [pending["id"]] and page["has_more"] is False


ANTHROPIC = {"anthropic-version": "2023-06-01"}


async def _anthropic(url, method, path, body=None):
    async with aiohttp.ClientSession(headers=ANTHROPIC) as s, s.request(
            method, url + path, data=orjson.dumps(body) if body is not None else None) as r:
        raw = await r.read()
        return r.status, [orjson.loads(x) for x in raw.splitlines()] if path.endswith("/results") and r.status == 200 \
            else orjson.loads(raw)


def _params(text):
    return {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": text}]}


# requests → the create call's refusal, in Anthropic's words
BAD_CREATES = {
    "no requests": ([], "between 1 and"),
    "a dot in a custom_id": ([{"custom_id": "abc.0", "params": _params("x")}], "custom_id"),
    "a custom_id of 65 characters": ([{"custom_id": "a" * 65, "params": _params("x")}], "custom_id"),
    "a custom_id used twice": ([{"custom_id": "a", "params": _params("x")}] * 2, "used twice"),
    "no params": ([{"custom_id": "a"}], "params"),
}


async def test_message_batches_refuse_what_the_api_refuses_and_end_with_results_by_custom_id(sim):
    url = await sim(seed=1, batch_delay_s=0.0)
    for requests, words in BAD_CREATES.values():
        status, body = await _anthropic(url, "POST", "/messages/batches", {"requests": requests})
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and words in body["error"]["message"]
    requests = [{"custom_id": "good-0", "params": _params("hello")},
                {"custom_id": "bad-0", "params": {**_params("x"), "temperature": 2}}]  # refused when processed
    status, created = await _anthropic(url, "POST", "/messages/batches", {"requests": requests})
    assert status == 200 and created["processing_status"] == "in_progress" and created["results_url"] is None
    status, batch = await _anthropic(url, "GET", f"/messages/batches/{created['id']}")
    assert batch["processing_status"] == "ended" and batch["request_counts"]["succeeded"] == 1
    assert batch["request_counts"]["errored"] == 1 and batch["results_url"].endswith(f"{created['id']}/results")
    status, rows = await _anthropic(url, "GET", f"/messages/batches/{created['id']}/results")
    by_id = {r["custom_id"]: r["result"] for r in rows}
    assert by_id["good-0"]["type"] == "succeeded" and by_id["good-0"]["message"]["usage"]["output_tokens"] > 0
    assert by_id["bad-0"]["error"]["error"]["type"] == "invalid_request_error"


async def test_message_batches_list_newest_first_in_pages_and_results_wait_for_the_end(sim):
    url = await sim(seed=1, batch_delay_s=60.0)
    ids = [(await _anthropic(url, "POST", "/messages/batches",
                             {"requests": [{"custom_id": f"r{i}", "params": _params("x")}]}))[1]["id"] for i in range(5)]
    status, page = await _anthropic(url, "GET", "/messages/batches?limit=2")
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] and page["last_id"] == ids[3]
    status, page = await _anthropic(url, "GET", f"/messages/batches?limit=10&after_id={page['last_id']}")
    assert [b["id"] for b in page["data"]] == ids[2::-1] and not page["has_more"]
    status, body = await _anthropic(url, "GET", f"/messages/batches/{ids[0]}/results")
    assert status == 400 and "still processing" in body["error"]["message"]
    status, batch = await _anthropic(url, "POST", f"/messages/batches/{ids[0]}/cancel")
    assert batch["processing_status"] == "ended" and batch["request_counts"]["canceled"] == 1
    stats_url = url.removesuffix("/v1") + "/stats"
    async with aiohttp.ClientSession() as s, s.get(stats_url) as r:
        stats = orjson.loads(await r.read())
    assert stats["batch_lines"] == 5 and stats["batch_lines_billed"] == 0 and stats["bill_usd"] == 0  # none answered
