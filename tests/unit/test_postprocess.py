"""Post-processing switches on hand-built sentences: words, timestamps and text stay consistent."""

from __future__ import annotations

from voxgate.engine.postprocess import apply, hotword_threshold, sound_key
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import Hotword, RecognitionOptions, Sentence, Word


def sentences(tokens: list[str], language: str = "en") -> list[Sentence]:
    """One token every 400 ms, 300 ms long."""
    raw = [(i * 0.4, i * 0.4 + 0.3, token, 0.9) for i, token in enumerate(tokens)]
    return group_sentences(make_words(raw), language)


def spans(sentence: Sentence) -> list[tuple[int, int, str, str]]:
    return [(w.begin_time, w.end_time, w.text, w.punctuation) for w in sentence.words]


def assert_consistent(result: list[Sentence]) -> None:
    for sentence in result:
        assert sentence.words
        assert sentence.begin_time == sentence.words[0].begin_time
        assert sentence.end_time == sentence.words[-1].end_time
        times = [t for w in sentence.words for t in (w.begin_time, w.end_time)]
        assert times == sorted(times)


def test_nothing_switched_on_changes_nothing() -> None:
    tokens = [" Um,", " twenty", " three", " shit."]
    result = apply(sentences(tokens), RecognitionOptions(), "en")
    assert result[0].text == "Um, twenty three shit."


def test_english_itn_merges_number_words_into_one_timed_word() -> None:
    tokens = [" I", " have", " twenty", " three", " apples", " and", " one", " hundred", " dollars."]
    (result,) = apply(sentences(tokens), RecognitionOptions(itn=True), "en")
    assert result.text == "I have 23 apples and $100."
    assert spans(result)[2] == (800, 1500, " 23", "")  # "twenty" begin .. "three" end
    assert spans(result)[-1] == (2400, 3500, " $100", ".")
    assert_consistent([result])


def test_english_itn_leaves_ambiguous_words_alone() -> None:
    tokens = [" Wait", " a", " second,", " I", " saw", " one", " of", " them", " fifty", " percent."]
    (result,) = apply(sentences(tokens), RecognitionOptions(itn=True), "en")
    assert result.text == "Wait a second, I saw one of them 50%."


def test_chinese_itn_uses_written_dates_and_keeps_idioms() -> None:
    tokens = [
        "今天",
        "是",
        "二零二四年",
        "三月",
        "五日",
        "，",
        "我",
        "十分",
        "开心",
        "，",
        "买",
        "了",
        "二十三",
        "个",
        "苹果",
        "。",
    ]
    (result,) = apply(sentences(tokens, "zh"), RecognitionOptions(itn=True), "zh")
    assert result.text == "今天是2024年3月5日，我十分开心，买了23个苹果。"
    date = next(w for w in result.words if w.text.startswith("2024"))
    assert (date.begin_time, date.end_time) == (800, 1900)
    assert_consistent([result])


def test_english_fillers_removed_and_first_word_capitalized() -> None:
    tokens = [" Um,", " so", " the", " plan,", " you", " know,", " is", " uh", " simple.", " Hmm."]
    result = apply(sentences(tokens), RecognitionOptions(disfluency_removal=True), "en")
    assert [s.text for s in result] == ["So the plan, is simple."]
    assert result[0].begin_time == 400  # "so"
    assert_consistent(result)


def test_english_real_words_that_look_like_fillers_stay() -> None:
    tokens = [" Do", " you", " know", " what", " I", " mean?", " Ahead", " of", " time."]
    result = apply(sentences(tokens), RecognitionOptions(disfluency_removal=True), "en")
    assert [s.text for s in result] == ["Do you know what I mean?", "Ahead of time."]


def test_chinese_fillers_removed_conservatively() -> None:
    tokens = ["嗯", "，", "那个", "，", "我们", "就是", "要", "呃", "开会", "，", "好", "啊", "。"]
    (result,) = apply(sentences(tokens, "zh"), RecognitionOptions(disfluency_removal=True), "zh")
    assert result.text == "我们就是要开会，好啊。"
    assert result.begin_time == 1600  # "我们"
    assert_consistent([result])


def test_sensitive_words_masked_per_character_with_builtin_and_request_words() -> None:
    tokens = [" What", " the", " fuck", " is", " this", " darn", " shitake?"]
    (result,) = apply(sentences(tokens), RecognitionOptions(special_word_filter=["darn"]), "en")
    assert result.text == "What the **** is this **** shitake?"
    assert spans(result)[2] == (800, 1100, " ****", "")


def test_sensitive_words_in_chinese() -> None:
    tokens = ["你", "这个", "傻逼", "，", "真", "讨厌", "。"]
    (result,) = apply(sentences(tokens, "zh"), RecognitionOptions(special_word_filter=["讨厌"]), "zh")
    assert result.text == "你这个**，真**。"


def test_sensitive_filter_off_by_default() -> None:
    (result,) = apply(sentences([" oh", " shit."]), RecognitionOptions(special_word_filter=None), "en")
    assert result.text == "oh shit."


def test_traditional_to_simplified_and_full_width_punctuation() -> None:
    tokens = ["這是", "ＡＢＣ", "公司", ",", "歡迎", "!"]
    (result,) = apply(sentences(tokens, "zh"), RecognitionOptions(), "zh")
    assert result.text == "这是ABC公司，欢迎！"
    (kept,) = apply(sentences(["這是", "公司", "。"], "zh"), RecognitionOptions(simplified_chinese=False), "zh")
    assert kept.text == "這是公司。"


def test_hotword_correction_merges_a_split_term() -> None:
    tokens = [" We", " deployed", " it", " on", " Cuba", " Nettie's", " and", " Jenkins."]
    options = RecognitionOptions(hotwords=[Hotword("Kubernetes", 4)])
    (result,) = apply(sentences(tokens), options, "en")
    assert result.text == "We deployed it on Kubernetes and Jenkins."
    assert spans(result)[4] == (1600, 2300, " Kubernetes", "")
    assert_consistent([result])


def test_hotword_correction_keeps_the_words_around_a_correct_term() -> None:
    tokens = [" We", " moved", " to", " Kubernetes", " from", " a", " Kubernetis", " cluster."]
    (result,) = apply(sentences(tokens), RecognitionOptions(hotwords=[Hotword("Kubernetes", 5)]), "en")
    assert result.text == "We moved to Kubernetes from a Kubernetes cluster."
    assert [w.text for w in result.words][2:4] == [" to", " Kubernetes"]


def test_hotword_correction_does_not_insert_into_unrelated_speech() -> None:
    vocabulary = [Hotword("Kubernetes", 5), Hotword("Severus", 5), Hotword("Grafana", 5), Hotword("Qwen", 5)]
    text = [" I", " have", " several", " ideas,", " the", " graph", " is", " on", " the", " queen", " bed."]
    (result,) = apply(sentences(text), RecognitionOptions(hotwords=vocabulary), "en")
    assert result.text == "I have several ideas, the graph is on the queen bed."


def test_hotword_weight_and_language() -> None:
    assert hotword_threshold(Hotword("Kubernetes", 5)) < hotword_threshold(Hotword("Kubernetes", 1))
    assert hotword_threshold(Hotword("Qwen", 4)) > hotword_threshold(Hotword("Kubernetes", 4))
    assert sound_key("Griffana") == sound_key("Grafana") != sound_key("graph")
    zh_only = RecognitionOptions(hotwords=[Hotword("Kubernetes", 5, lang="zh")])
    (result,) = apply(sentences([" on", " Kubernetis."]), zh_only, "en")
    assert result.text == "on Kubernetis."


def test_sentence_of_only_fillers_disappears_and_speaker_is_kept() -> None:
    first, second = sentences([" Uh.", " Fine."])
    second.speaker_id = 1
    result = apply([first, second], RecognitionOptions(disfluency_removal=True), "en")
    assert [(s.text, s.speaker_id) for s in result] == [("Fine.", 1)]


def test_suspects_in_need_a_similar_low_confidence_span() -> None:
    from voxgate.engine.vocabulary_pass import suspects_in

    def words(*pairs: tuple[str, float]) -> list[Word]:
        return [Word(i * 100, i * 100 + 90, text, probability=p) for i, (text, p) in enumerate(pairs)]

    terms = [Hotword("Anandamide", 4), Hotword("Quillfeather", 4), Hotword("Grafana", 4)]
    garbled = words(("measured", 0.5), ("and", 0.4), ("and", 0.1), ("and", 0.3), ("my", 0.4), ("levels", 0.8))
    suspects = [t.text for t in suspects_in(garbled, "measured and and and my levels", terms, "en")]
    assert suspects[0] == "Anandamide" and "Quillfeather" not in suspects
    confident = words(("The", 0.9), ("weather", 0.96), ("was", 0.99), ("cold", 1.0))
    assert suspects_in(confident, "The weather was cold", terms, "en") == []  # similar but sure
    present = words(("Anandamide", 0.2), ("levels", 0.9))
    assert suspects_in(present, "Anandamide levels", terms, "en") == []  # already there
