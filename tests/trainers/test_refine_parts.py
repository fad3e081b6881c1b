"""Parsers and rules of refinement on hand-made answers."""
import numpy as np

from culturepark.trainers.refine.config import DedupConfig
from culturepark.trainers.refine.dedup import cluster, representatives
from culturepark.trainers.refine.postprocess import first_person, word_count
from culturepark.trainers.refine.prompts import parse_opinions, parse_rewrite, parse_verdict, strip_speaker

NAMES = ["Wei", "Lily", "Moderator"]


def test_verdicts_are_parsed_through_case_punctuation_and_extra_words():
    assert parse_verdict("Entail.") == "entail"
    assert parse_verdict("  CONTRADICTION: the opinion is against it") == "contradict"
    assert parse_verdict("The answer is: irrelevant!") == "irrelevant"
    assert parse_verdict("entails") == "entail"
    assert parse_verdict("I am not sure") is None


def test_opinion_lists_bullets_numbers_none_and_garbage():
    assert parse_opinions("- Wei: Family comes first.\n2. I value duty.\n* \"Elders matter.\"", "chat", NAMES) == [
        "Family comes first.", "I value duty.", "Elders matter."]
    assert parse_opinions("NONE", "chat", NAMES) == []
    assert parse_opinions("I cannot help with that.", "chat", NAMES) is None
    assert parse_opinions(" Family comes first.\n- Duty matters.", "transcript", NAMES) == [
        "Family comes first.", "Duty matters."]


def test_speaker_prefix_is_stripped_on_word_boundaries_only():
    assert strip_speaker("Wei: I agree.", NAMES) == "I agree."
    assert strip_speaker("Weight: it matters.", NAMES) == "Weight: it matters."
    assert strip_speaker("I told Wei: no.", NAMES) == "I told Wei: no."
    assert parse_rewrite('"Lily: I now agree."\nextra', NAMES) == "I now agree."


def test_first_person_rules():
    assert first_person("Wei believes that family comes first.", ["Wei", "Lily"]) == "I believe that family comes first."
    assert first_person("He also thinks duty matters.", ["Wei"]) == "I also think duty matters."
    assert first_person("Wei's parents matter most.", ["Wei"]) == "My parents matter most."
    assert first_person("Family comes first.", ["Wei"]) == "Family comes first."
    assert word_count("I can't agree, sorry") == 5


def test_agglomerative_threshold_merges_only_close_vectors_and_keeps_the_central_member():
    a = np.array([1.0, 0.0, 0.0])
    vecs = np.stack([a, a + np.array([0, 0.05, 0]), a + np.array([0, 0.1, 0]), [0, 1.0, 0], [0, 0, 1.0]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = cluster(vecs, DedupConfig(threshold=0.25))
    assert len(set(labels)) == 3 and labels[0] == labels[1] == labels[2]
    reps = representatives(vecs, labels)
    assert reps[int(labels[0])] == 1  # the middle one is nearest the centroid
    assert len(set(cluster(vecs, DedupConfig(method="kmeans", k=10)))) == 5  # the original's k=min(k, n)
    # keep: longest (the original's): the longest member of each cluster, the first of equals
    longest = representatives(vecs, labels, [30, 12, 45, 7, 7])
    assert longest[int(labels[0])] == 2 and longest[int(labels[3])] == 3
    assert representatives(vecs, labels, [50, 50, 10, 1, 1])[int(labels[0])] == 0


def test_paper_export_uses_one_opinion_a_pass_and_bare_codes_for_items_without_opinions():
    from culturepark.agents.meta import ConversationMeta
    from culturepark.trainers.refine.pipeline import Opinion, Source, _paper_examples

    def person(name):
        return {"name": name, "culture": "Chinese", "person": "a Chinese person", "culture_phrase": "Chinese culture",
                "possessive": "his"}

    def meta(item, code):
        return ConversationMeta.model_validate({
            "culture": "Chinese", "country": "China", "country_file": "China", "mode": "in", "version": "v2",
            "item_id": item, "item_text": "Work is a duty", "stance_code": code, "stance_text": str(code),
            "stance_policy": "sample", "stance_respondents": 1,
            "item_options": "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree",
            "participants": {"delegate": person("Wei"), "main_contact": person("Li")}})
    a1, a2, b1, b2, b3 = (Source("a1", meta("1", 2), "", NAMES), Source("a2", meta("1", 3), "", NAMES),
                          Source("b1", meta("2", 4), "", NAMES), Source("b2", meta("2", 1), "", NAMES),
                          Source("b3", meta("2", 4), "", NAMES))
    kept = [Opinion("o1", a1, "x", text="I agree a lot.", kept=True), Opinion("o2", a2, "y", text="I do not.",
                                                                               kept=True),
            Opinion("o3", a1, "z", text="Dropped.", drop_reason="duplicate"),
            Opinion("o4", b1, "w", text="Dropped too.", drop_reason="irrelevant")]
    rows, beyond = _paper_examples([a1, a2, b1, b2, b3], kept, passes=3)
    answers = [r[-1]["content"] for r in rows]
    # pass 0: item 1's first opinion (code of its conversation), item 2's bare modal code; pass 1 the same
    # with item 1's second opinion; pass 2: item 1 has no third opinion, item 2 its bare code again
    assert answers == ["2. I agree a lot.", "4", "3. I do not.", "4", "4"]
    assert beyond == 0 and _paper_examples([a1, a2], kept, passes=1)[1] == 1
    assert rows[0][1]["content"].startswith('Answer with a number from 1 to 4. Do you agree with the statement "Work')


def test_fields_added_later_leave_the_hash_of_an_older_refinement_alone():
    """Hashes a refinement directory got before extract_speakers, the export format and a backend's
    template existed: at their defaults those fields must not change them, or --resume refuses."""
    from culturepark.scenarios.schema import RemoteBackendConfig
    from culturepark.trainers.refine.config import RefineConfig

    assert RefineConfig().content_hash("s") == "838e6a7bce82d8f8"
    assert RefineConfig(backend=RemoteBackendConfig(model="gpt-4")).content_hash("s") == "8cde31eae5e4f4e3"
    assert RefineConfig().with_preset("paper").content_hash("s") != RefineConfig().content_hash("s")
