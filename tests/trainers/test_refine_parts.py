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
    vecs = np.stack([a, a + [0, 0.05, 0], a + [0, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = cluster(vecs, DedupConfig(threshold=0.25))
    assert len(set(labels)) == 3 and labels[0] == labels[1] == labels[2]
    reps = representatives(vecs, labels)
    assert reps[int(labels[0])] == 1  # the middle one is nearest the centroid
    assert len(set(cluster(vecs, DedupConfig(method="kmeans", k=10)))) == 5  # the original's k=min(k, n)
