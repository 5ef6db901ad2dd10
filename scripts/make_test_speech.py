"""Write the held-out sentences that tests/test_motion.py speaks to tests/data/held_out_speech/.

Made once with espeak-ng (a system program the README's commands do not install), so the tests
run on a machine without it. Each file is `speak(sentence, default_rng([7, index]))`: the voice,
speed and pitch that `make-dataset` would draw, at espeak-ng's own 22,050 Hz, 16-bit FLAC.

    python scripts/make_test_speech.py        # needs espeak-ng (apt-get install espeak-ng)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile

from posecast.data.cospeech import HELD_OUT_SENTENCES, SENTENCES, espeak_program, speak

FOLDER = Path(__file__).resolve().parent.parent / "tests" / "data" / "held_out_speech"


def main() -> None:
    espeak = espeak_program()
    if espeak is None:
        sys.exit("error: espeak-ng is missing (apt-get install espeak-ng)")
    FOLDER.mkdir(parents=True, exist_ok=True)
    first = len(SENTENCES) - HELD_OUT_SENTENCES
    for index, text in enumerate(SENTENCES[first:]):
        clip = speak(text, np.random.default_rng([7, index]), espeak)
        path = FOLDER / f"sentence_{first + index:02d}.flac"
        soundfile.write(path, clip.samples, clip.sample_rate, subtype="PCM_16")
        print(f"{path.name}: {clip.duration:.2f} s at {clip.sample_rate} Hz  {text!r}")


if __name__ == "__main__":
    main()
