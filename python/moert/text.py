"""Text in and out: the checkpoint's tokenizer.json through the `tokenizers`
package (optional; token ids work without it)."""

import os

from . import _moert

TOKENIZER_FILE = "tokenizer.json"


def load_tokenizer(directory):
    """The tokenizers.Tokenizer of `directory`/tokenizer.json.

    Raises moert.Error naming the missing file, or the missing package.
    """
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise _moert.Error(f"{path} not found: text needs the checkpoint's tokenizer "
                           f"({TOKENIZER_FILE}); pass token ids instead")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise _moert.Error("text needs the 'tokenizers' package (pip install tokenizers) to read "
                           f"{path}; pass token ids instead") from exc
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # the package's own error type varies by version
        raise _moert.Error(f"{path}: cannot be read by tokenizers: {exc}") from exc


def text_pieces(tokens, decode):
    """Yields the text of a stream of token ids piece by piece.

    Decodes a short window of recent ids at a time (not the whole sequence)
    and holds a piece back while it ends in an incomplete character (U+FFFD
    from a partial UTF-8 sequence), so that the pieces joined equal
    decode(all ids).
    """
    ids = []
    prefix = 0   # start of the decoding window
    emitted = 0  # ids whose text has been yielded
    for t in tokens:
        ids.append(t)
        before = decode(ids[prefix:emitted])
        now = decode(ids[prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            yield now[len(before):]
            prefix, emitted = emitted, len(ids)
    if emitted < len(ids):
        before = decode(ids[prefix:emitted])
        now = decode(ids[prefix:])
        if len(now) > len(before):
            yield now[len(before):]
