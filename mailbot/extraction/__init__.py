"""Extraction: raw bytes of a forwarded NDR in, findings out. Pure: no I/O."""

from mailbot.extraction.findings import Extraction, Finding

__all__ = ["Extraction", "Finding", "extract"]


def extract(raw: bytes) -> Extraction:  # replaced by the real extractor
    from mailbot.extraction.extract import extract as _extract

    return _extract(raw)
