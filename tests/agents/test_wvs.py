import json
import random
from collections import Counter

import pytest

from culturepark.agents.personas import choose_stance
from culturepark.agents.wvs import WVSData, WVSError, check_scale, parse_scale

ORIGINAL_Q31 = "1. Strongly agree 2. agree 4. Disagree 4. Strongly disagree"  # the original table's line


def test_check_scale_labels_a_consistent_option_list():
    assert check_scale("27", "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree") == {
        1: "Strongly agree", 2: "agree", 3: "Disagree", 4: "Strongly disagree"}
    assert check_scale("122", "0. Disagree 1. Hard to say 2. Agree") == {0: "Disagree", 1: "Hard to say", 2: "Agree"}
    ten = check_scale("158", "1. completely Disagree 2. a 3. b 4. c 5. d 6. e 7. f 8. g 9. h 10. Completely Agree")
    assert len(ten) == 10 and ten[10] == "Completely Agree"


@pytest.mark.parametrize("option", [ORIGINAL_Q31, "1. a 3. b 2. c", "2. a 2. b", "no numbers here", ""])
def test_check_scale_refuses_codes_not_distinct_and_increasing_in_one_line_naming_the_item(option):
    with pytest.raises(WVSError) as err:
        check_scale("31", option)
    assert "Q31" in str(err.value) and "\n" not in str(err.value)


def test_the_item_table_loader_refuses_the_original_q31(tmp_path):
    wvs = tmp_path / "wvs"
    (wvs / "countries").mkdir(parents=True)
    (wvs / "questions.jsonl").write_text(json.dumps({"topic": "SOCIAL VALUES", "q_id": "31", "option": ORIGINAL_Q31,
                                                     "q_content": "On the whole, men make better business "
                                                                  "executives than women do"}) + "\n")
    with pytest.raises(WVSError, match=r"item Q31: option codes 1, 2, 4, 4 are not distinct and increasing"):
        WVSData(tmp_path).items()


def test_old_run_metadata_is_still_read_leniently():
    """Conversations made from the unchecked table carry its option text; they still load, renumbered, noted."""
    scale, note = parse_scale(ORIGINAL_Q31)
    assert scale == {1: "Strongly agree", 2: "agree", 3: "Disagree", 4: "Strongly disagree"}
    assert note is not None and "renumbered" in note


def test_valid_codes_the_options_do_not_list_are_warned_about(tiny_data):
    path = tiny_data / "wvs" / "countries" / "Germany.csv"
    path.write_text(path.read_text() + "276,DEU,7,4,5,3\n")  # Q27 offers 1-4; a respondent coded 7
    data = WVSData(tiny_data)
    warnings = data.unlisted("Germany")
    assert len(warnings) == 1 and "Germany.csv: Q27 has valid answer codes 7" in warnings[0]
    assert data.unlisted("China") == []


def test_the_full_shared_item_table_passes_and_lists_every_valid_code(shared_data):
    data = WVSData(shared_data)
    assert len(data.items()) == 50
    assert data.item("31").scale == {1: "Strongly agree", 2: "agree", 3: "Disagree", 4: "Strongly disagree"}
    assert [w for c in data.countries() for w in data.unlisted(c)] == []


def test_unlabelled_code_is_stated_as_a_number_not_invented(tiny_data):
    item = WVSData(tiny_data).item("27")
    assert item.label(2) == "agree"
    assert item.label(7) == "7 on a scale from 1 to 4"


def test_missing_codes_and_aggregate_rows_are_dropped(tiny_data):
    data = WVSData(tiny_data)
    assert sorted(data.answers("China", "27")) == [1, 1, 1, 2]  # -1 dropped, Avg rows skipped
    assert sorted(data.answers("China", "158")) == [7, 8, 9, 10]
    assert data.answers("China", "132") == []  # never asked (-4 everywhere)
    assert sorted(data.answers("Germany", "31")) == [4, 4]  # -5 dropped


def test_policies_mode_and_mean(tiny_data):
    data = WVSData(tiny_data)
    item = data.item("158")
    answers = data.answers("China", "158")
    assert choose_stance("mode", item, answers, random.Random(0)).code == 7  # tie → lowest code
    mean = choose_stance("mean", item, answers, random.Random(0))
    assert mean.code == 9 and "rounded mean" in mean.text and "8.50" in mean.text


def test_sample_policy_follows_the_respondents_distribution_in_every_country(shared_data):
    data = WVSData(shared_data)
    rng = random.Random(11)
    draws = 4000
    for country in data.countries():
        for item in data.items()[::7]:  # a spread of scales
            answers = data.answers(country, item.q_id)
            if not answers:
                continue
            assert min(answers) >= 0
            expected = Counter(answers)
            got = Counter(choose_stance("sample", item, answers, rng).code for _ in range(draws))
            assert set(got) <= set(expected)
            tvd = 0.5 * sum(abs(got[c] / draws - expected[c] / len(answers)) for c in expected)
            assert tvd < 0.05, (country, item.q_id, tvd)


def test_items_never_asked_in_the_real_data_are_recognised(shared_data):
    data = WVSData(shared_data)
    never = [it.q_id for it in data.items() if not data.answers("China", it.q_id)]
    assert len(never) == 18  # as documented: 18 of the 50 items were not asked in China
    jordan = [it.q_id for it in data.items() if not data.answers("Jordan", it.q_id)]
    assert len(jordan) == 2


def test_unknown_country_and_item_fail_clearly(tiny_data):
    data = WVSData(tiny_data)
    with pytest.raises(ValueError, match="Atlantis"):
        data.answers("Atlantis", "27")
    with pytest.raises(ValueError, match="999"):
        data.item("999")


@pytest.mark.parametrize("reply,code", [
    ("3", 3), ("2. I agree a lot.", 2), ("I agree with this statement.", 2), ('"Strongly Agree."', 1),
    ("I strongly disagree", 4), ("Disagree. I agree with my dad though.", 3),  # the first sentence decides
    ("I agree, or maybe disagree", None), ("It depends.", None), ("strongly agreeable", None), ("7", None),
])
def test_an_answer_code_is_read_from_a_number_or_the_one_option_a_reply_names(reply, code):
    from culturepark.agents.paper_format import parse_code
    from culturepark.agents.wvs import WVSItem, parse_scale

    scale, _ = parse_scale("1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree")
    assert parse_code(reply, WVSItem("27", "", "Work is a duty", "", scale)) == code
