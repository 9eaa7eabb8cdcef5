from __future__ import annotations

from voxgate.engine import postprocess
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import RecognitionOptions


def test_chinese_output_is_simplified_by_default() -> None:
    words = make_words([(0.0, 0.5, "歡迎", 1.0), (0.5, 1.0, "使用", 1.0), (1.0, 1.5, "阿里雲。", 1.0)])
    sentences = postprocess.apply(group_sentences(words, "zh"), RecognitionOptions(), "zh")
    assert sentences[0].text == "欢迎使用阿里云。"
    assert [w.text for w in sentences[0].words] == ["欢迎", "使用", "阿里云"]


def test_traditional_kept_when_asked() -> None:
    words = make_words([(0.0, 0.5, "歡迎", 1.0)])
    options = RecognitionOptions(simplified_chinese=False)
    assert postprocess.apply(group_sentences(words, "zh"), options, "zh")[0].text == "歡迎"
