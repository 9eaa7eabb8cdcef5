from __future__ import annotations

from voxgate.engine.sentences import group_sentences, make_words, split_punctuation


def test_split_punctuation_keeps_leading_space() -> None:
    assert split_punctuation(" world,") == (" world", ",")
    assert split_punctuation("好，") == ("好", "，")
    assert split_punctuation(" ...") == ("", "...")


def test_words_are_monotonic_and_offset() -> None:
    words = make_words([(0.5, 0.9, " Hello", 0.9), (0.8, 1.2, " world.", 0.9)], offset_ms=1000)
    assert [(w.begin_time, w.end_time) for w in words] == [(1500, 1900), (1900, 2200)]
    assert words[1].punctuation == "."


def test_punctuation_only_token_attaches_to_previous_word() -> None:
    words = make_words([(0.0, 0.4, " yes", 1.0), (0.4, 0.5, "?", 1.0)])
    assert len(words) == 1 and words[0].punctuation == "?"


def test_sentences_cut_at_punctuation_and_pauses() -> None:
    raw = [
        (0.0, 0.3, " Go", 1.0),
        (0.3, 0.6, " home.", 1.0),
        (0.7, 1.0, " Then", 1.0),
        (1.0, 1.3, " rest", 1.0),
        (3.0, 3.4, " later", 1.0),
    ]
    sentences = group_sentences(make_words(raw), "en", max_pause_ms=1000)
    assert [s.text for s in sentences] == ["Go home.", "Then rest", "later"]
    assert sentences[2].begin_time == 3000


def test_cjk_sentences_join_without_spaces() -> None:
    words = make_words([(0.0, 0.2, "你好", 1.0), (0.2, 0.4, "，世界", 1.0), (0.4, 0.6, "。", 1.0)])
    sentences = group_sentences(words, "zh")
    assert len(sentences) == 1
    assert sentences[0].text == "你好，世界。"


def test_title_abbreviation_does_not_end_a_sentence() -> None:
    words = make_words([(0.0, 0.3, " Mr.", 0.9), (0.3, 0.9, " Okonkwo", 0.5), (0.9, 1.4, " approved.", 0.9)])
    words += make_words([(1.6, 2.0, " Next", 0.9), (2.0, 2.3, " one.", 0.9)])
    sentences = group_sentences(words, "en")
    assert [s.text for s in sentences] == ["Mr. Okonkwo approved.", "Next one."]
