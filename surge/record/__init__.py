"""Record and replay: ``surge run --record DIR`` writes the strategy loop's input
(:mod:`surge.record.recorder`, in the format of :mod:`surge.record.format`), and ``surge replay DIR``
feeds it through the bot's own decision code on virtual time (:mod:`surge.record.replay`).

This module holds only what the command line needs to describe them, so ``surge --help`` does not
import the recorder; import the submodules for the rest (the replay imports :mod:`surge.app`).
"""

#: The size of a whole-universe recording, measured: a 10-minute ``surge run --sim --record`` (531
#: kline_4h and ~140 kline_1m streams, 2,170 kline updates a second, ~53 bytes each compressed) wrote
#: 69 MB. Binance pushes fewer updates than the simulator (only candles that changed, thin symbols
#: rarely), so this is the upper end.
EXPECTED_MB_PER_HOUR = 400
#: ``--record-max-mb``'s default (about 5 hours of the whole universe at that rate).
DEFAULT_MAX_MB = 2048

__all__ = ["DEFAULT_MAX_MB", "EXPECTED_MB_PER_HOUR"]
