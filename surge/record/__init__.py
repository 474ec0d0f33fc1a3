"""Record and replay: ``surge run --record DIR`` writes the strategy loop's input
(:mod:`surge.record.recorder`, in the format of :mod:`surge.record.format`), and ``surge replay DIR``
feeds it through the bot's own decision code on virtual time (:mod:`surge.record.replay`).

This module holds only what the command line needs to describe them, so ``surge --help`` does not
import the recorder; import the submodules for the rest (the replay imports :mod:`surge.app`).
"""

#: The expected size of a whole-universe recording: 531 kline_4h and ~100 kline_1m streams, about
#: 1,600 kline updates a second, ~34 bytes each once compressed (measured on synthetic prices).
EXPECTED_MB_PER_HOUR = 200
#: ``--record-max-mb``'s default.
DEFAULT_MAX_MB = 2048

__all__ = ["DEFAULT_MAX_MB", "EXPECTED_MB_PER_HOUR"]
