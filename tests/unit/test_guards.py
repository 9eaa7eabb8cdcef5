from __future__ import annotations

from faster_whisper.transcribe import Segment, Word

from voxgate.engine.guards import clean_segments, repeated_span


def _segment(
    text_words: list[str], *, no_speech: float = 0.1, logprob: float = -0.3, compression: float = 1.2
) -> Segment:
    words = [Word(start=i * 0.3, end=i * 0.3 + 0.3, word=w, probability=0.9) for i, w in enumerate(text_words)]
    return Segment(
        id=1,
        seek=0,
        start=0.0,
        end=len(words) * 0.3,
        text="".join(text_words),
        tokens=[],
        avg_logprob=logprob,
        compression_ratio=compression,
        no_speech_prob=no_speech,
        words=words,
        temperature=0.0,
    )


def test_repetition_loop_is_cut_after_first_occurrence() -> None:
    loop = ["it", "was", "the", "best"] * 4
    assert repeated_span(loop) == 4
    assert repeated_span(["go", "forward", "ten", "meters"]) is None


def test_clean_segments_drops_invented_text_and_cuts_loops() -> None:
    good = _segment([" Go", " forward"])
    invented = _segment([" Thank", " you."], no_speech=0.9, logprob=-1.2)
    looping = _segment([" It", " was", " the", " best."] * 4, compression=3.0)
    kept = clean_segments([good, invented, looping])
    assert len(kept) == 2
    assert kept[0] is good
    assert [w.word for w in kept[1].words or []] == [" It", " was", " the", " best."]
