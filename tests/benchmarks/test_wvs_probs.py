"""Answer distributions read from answer probabilities (`eval wvs --method`): the logprobs parser on
hand-written OpenAI bodies, the sim server's scripted distributions, probabilities against samples of
the same model, and the fallback when a server gives no logprobs."""
from __future__ import annotations

import math

import pytest

from culturepark.benchmarks import distribution
from culturepark.benchmarks.eval_run import EvalSettings
from culturepark.benchmarks.wvs_items import evaluate
from culturepark.engine.backends import logprobs
from culturepark.testing.sim_config import ScriptRule

FOUR = {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.4}  # a scripted answer distribution on 1..4 items


def _alt(token: str, p: float) -> dict[str, object]:
    return {"token": token, "logprob": math.log(p), "bytes": list(token.encode())}


def test_label_probabilities_read_at_the_first_non_blank_position_with_the_rest_reported_outside():
    # chat: a blank first token is skipped; "3" and " 3" are one option; "I" is mass outside the options
    chat = {"logprobs": {"content": [
        {"token": " ", "logprob": 0.0, "top_logprobs": [_alt(" ", 1.0)]},
        {"token": "3", "logprob": math.log(0.5),
         "top_logprobs": [_alt("3", 0.5), _alt(" 3", 0.1), _alt("2", 0.2), _alt("I", 0.1)]}]}}
    got = logprobs.label_probs(chat, ("1", "2", "3", "4"), "chat")
    assert got is not None and got == pytest.approx({"1": 0.0, "2": 0.2, "3": 0.6, "4": 0.0})
    dist, outside = distribution.from_probabilities(got, [1, 2, 3, 4])
    assert dist == pytest.approx({1: 0.0, 2: 0.25, 3: 0.75, 4: 0.0}) and outside == pytest.approx(0.2)
    # legacy completions: one token → logprob mapping per position
    comp = {"logprobs": {"tokens": ["2"], "token_logprobs": [math.log(0.7)],
                         "top_logprobs": [{"2": math.log(0.7), "1": math.log(0.1), "Yes": math.log(0.1)}]}}
    assert logprobs.label_probs(comp, ("1", "2"), "completions") == pytest.approx({"1": 0.1, "2": 0.7})
    # no logprobs in the body (a server that gives none): nothing, never zeros
    assert logprobs.label_probs({"message": {"content": "3"}}, ("1", "2"), "chat") is None
    # options with no mass at all cannot be renormalised
    assert distribution.from_probabilities({"1": 0.0, "2": 0.0}, [1, 2]) is None
    assert logprobs.request_fields("chat") == {"logprobs": True, "top_logprobs": 20}


async def test_probabilities_from_the_sim_server_are_its_scripted_distribution_with_outside_mass(
        sim, tmp_path, tiny_data):
    # Q27 (1..4): 0.3 on "1", 0.3 on "3", 0.4 on "I" (not an option); China's valid answers are 1, 1, 2, 1
    url = await sim(script=[ScriptRule(pattern="from 1 to 4", distribution={"1": 0.3, "3": 0.3, "I": 0.4})])
    said: list[str] = []
    r = await evaluate(EvalSettings(model="openai:sim-model", base_url=url), ["Chinese"], tiny_data,
                       tmp_path / "p", seeds=1, items=["27"], method="probs", say=said.append)
    row = r.cultures["Chinese"].per_item[0]
    assert r.method == "probs" and row.method == "probs" and row.answers is None
    assert row.model_distribution == {"1": 0.5, "3": 0.5} and row.outside_mass == 0.4
    # by hand: CDFs (.5, .5, 1) and (.75, 1, 1): gaps .25 + .5 + 0 = .75 over 3 steps
    assert row.w1 == 0.25 and row.representativeness == 0.75
    summary = r.cultures["Chinese"].all.distribution
    assert summary is not None and summary.source == "probs" and summary.methods == {"probs": 1}
    assert summary.outside_mass == 0.4 and not said
    # the probabilities are in the eval's log: a resumed eval reads them back and asks nothing
    again = await evaluate(EvalSettings(model="openai:sim-model", base_url=url, resume=True), ["Chinese"], tiny_data,
                           tmp_path / "p", seeds=1, items=["27"], method="probs")
    assert again.requests == 0 and again.cultures["Chinese"].per_item[0] == row


def _ramp(lo: int, hi: int) -> dict[str, float]:
    """Option k (from the lowest) with probability proportional to k: a skewed, known distribution."""
    total = sum(range(1, hi - lo + 2))
    return {str(c): (c - lo + 1) / total for c in range(lo, hi + 1)}


async def test_from_probabilities_and_from_samples_of_the_same_model_agree_within_their_intervals(
        sim, tmp_path, shared_data):
    scales = {4: (1, 4), 5: (1, 5), 10: (1, 10), 3: (0, 2)}
    url = await sim(script=[ScriptRule(pattern=f"from {lo} to {hi}", distribution=_ramp(lo, hi))
                            for lo, hi in scales.values()])
    settings = EvalSettings(model="openai:sim-model", base_url=url, concurrency=64)
    items = ["27", "33", "158", "122"]
    probs = await evaluate(settings, ["German"], shared_data, tmp_path / "probs", seeds=1, items=items,
                           method="probs", temperature=1.0)
    samples = await evaluate(settings, ["German"], shared_data, tmp_path / "samples", seeds=1, items=items,
                             method="samples", samples=200, temperature=1.0)
    by_p = {x.item: x for x in probs.cultures["German"].per_item}
    by_s = {x.item: x for x in samples.cultures["German"].per_item}
    assert by_p.keys() == by_s.keys() == set(items)
    for item, p in by_p.items():
        s = by_s[item]
        scripted = _ramp(*scales[p.options])
        assert p.model_distribution == {c: round(x, 4) for c, x in scripted.items()}  # exactly what was scripted
        assert p.method == "probs" and p.outside_mass == 0.0
        assert s.method == "samples" and s.answers == 200 and p.w1 is not None and s.w1 is not None
        assert p.w1_interval is not None and s.w1_interval is not None
        # the samples' interval (respondents and answers resampled) holds the exact figure; the probabilities'
        # interval (respondents only: nothing to resample on the model's side) overlaps it
        assert s.w1_interval[0] <= p.w1 <= s.w1_interval[1], (item, p.w1, s.w1_interval)
        assert p.w1_interval[0] <= s.w1_interval[1] and s.w1_interval[0] <= p.w1_interval[1]
    dp, ds = probs.cultures["German"].all.distribution, samples.cultures["German"].all.distribution
    assert dp is not None and ds is not None and (dp.source, ds.source) == ("probs", "samples")
    for name in ("w1", "representativeness", "js_similarity"):
        e_p, e_s = getattr(dp, name), getattr(ds, name)
        assert e_s.interval[0] <= e_p.value <= e_s.interval[1], (name, e_p, e_s)
        assert e_p.interval[0] <= e_s.interval[1] and e_s.interval[0] <= e_p.interval[1]
    assert probs.requests == len(items) + len(items)  # one per item for the seed, one for its probabilities
    assert samples.requests >= 200 * len(items)


async def test_a_server_without_logprobs_falls_back_to_samples_in_one_line(sim, tmp_path, tiny_data):
    url = await sim(logprobs=False, script=[ScriptRule(pattern="from 1 to", distribution=FOUR)])
    settings = EvalSettings(model="openai:sim-model", base_url=url)
    said: list[str] = []
    r = await evaluate(settings, ["Chinese"], tiny_data, tmp_path / "a", seeds=1, items=["27", "31"], samples=6,
                       temperature=1.0, say=said.append)
    assert [line for line in said if "no answer probabilities" in line] == [
        "wvs: openai:sim-model gave no answer probabilities for 2 of 2 item × culture (no logprobs from the server, "
        "or option codes that begin with the same token); their distributions come from 6 samples at temperature 1.0"]
    rows = r.cultures["Chinese"].per_item
    assert r.method == "auto" and all(x.method == "samples" and x.answers == 6 for x in rows)
    assert (tmp_path / "a" / "samples" / "log.jsonl").exists()  # the fallback's own resumable eval
    d = r.cultures["Chinese"].all.distribution
    assert d is not None and d.source == "samples" and d.methods == {"samples": 2}
    strict = await evaluate(settings, ["Chinese"], tiny_data, tmp_path / "s", seeds=1, items=["27"],
                            method="probs", say=said.append)
    assert strict.cultures["Chinese"].per_item[0].w1 is None and strict.cultures["Chinese"].all.distribution is None
    assert said[-1].endswith("they have no distribution (--method probs)")


@pytest.mark.slow
async def test_the_embedded_model_gives_label_probabilities_and_samples_where_codes_share_a_first_token(
        tmp_path, tiny_data):
    # Q27 (1..4): one forward pass gives each code's next-token probability; Q158 (1..10): "1" and "10" begin
    # with the same digit token on Gemma's tokenizer, so one position cannot tell them apart → samples
    said: list[str] = []
    r = await evaluate(EvalSettings(model="local:gemma3-270m"), ["Chinese"], tiny_data, tmp_path / "e", seeds=1,
                       items=["27", "158"], samples=2, say=said.append)
    rows = {x.item: x for x in r.cultures["Chinese"].per_item}
    q27, q158 = rows["27"], rows["158"]
    assert q27.method == "probs" and q27.model_distribution is not None and q27.outside_mass is not None
    assert sum(q27.model_distribution.values()) == pytest.approx(1.0, abs=1e-3) and 0 <= q27.outside_mass < 1
    assert q158.method in ("samples", None) and q158.outside_mass is None  # None: neither sample was readable
    assert any("no answer probabilities for 1 of 2" in line for line in said)


def test_the_embedded_models_label_probabilities_are_read_past_a_blank_token_by_hand():
    # a tokenizer that splits digits and writes " 1" as a blank (id 0) then "1": after the prompt the blank has
    # 0.5, "1" 0.2, "2" 0.1 (0.2 elsewhere); after the blank "1" has 0.6 and "2" 0.2. So P("1") = 0.2 + 0.5 × 0.6
    # and P("2") = 0.1 + 0.5 × 0.2; "1" and "10" begin with the same token: no probabilities
    torch = pytest.importorskip("torch")
    from culturepark.engine.backends.local.backend import LocalBackend

    vocab = {"1": [1], " 1": [0, 1], "2": [2], " 2": [0, 2], "10": [1, 3], " 10": [0, 1, 3]}

    class Tokenizer:
        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            return {"input_ids": vocab[text]}

        def decode(self, ids: list[int]) -> str:
            return " " if ids == [0] else "x"

    backend = LocalBackend()
    backend._tokenizer = Tokenizer()
    asked: list[list[list[int]]] = []

    def after_blank(ids: list[list[int]], shared: int | None = None) -> list[object]:
        asked.append(ids)
        return [torch.log(torch.tensor([1e-9, 0.6, 0.2, 0.2 - 1e-9]))]
    backend._next_token_logprobs = after_blank  # type: ignore[method-assign]
    logp = torch.log(torch.tensor([0.5, 0.2, 0.1, 0.2]))
    got = backend._probs([7, 8], logp, ("1", "2"))
    assert got == pytest.approx({"1": 0.5, "2": 0.2}) and asked == [[[7, 8, 0]]]
    assert backend._probs([7, 8], logp, ("1", "10")) is None
