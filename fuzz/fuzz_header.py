"""
Coverage-guided fuzzing of the bytecount header parser with atheris.

    make fuzz                  # a bounded run (FUZZ_SECONDS, default 60)

The input is split into chunks at points the fuzzer chooses, so that every
way a header can arrive across reads is explored.
"""

import sys

import atheris

with atheris.instrument_imports():
    from echod.protocols.bytecount import HeaderError, HeaderParser


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_header = fdp.ConsumeIntInRange(1, 64)
    max_size = fdp.ConsumeIntInRange(1, 1 << 40)
    parser = HeaderParser(max_header, max_size)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        try:
            result = parser.feed(chunk)
        except HeaderError:
            return
        if result is not None:
            length, rest = result
            if not 0 <= length <= max_size or not chunk.endswith(rest):
                raise AssertionError(f"bad result {result!r} for chunk {chunk!r}")
            return
        if parser.pending > max_header:
            raise AssertionError(f"buffered {parser.pending} > {max_header}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
