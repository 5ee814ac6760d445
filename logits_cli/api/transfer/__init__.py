"""The transfer engine: parallel ranged, resumable, verified downloads for both generations
of the service (docs/ARCHITECTURE.md §3, docs/protocol.md §6.3, §11.3).

One module per concern, none of which imports the client (the client hands the engine its
HTTP client, retry policy and callables that fetch signed URLs):

- ``tuning``      sizes, intervals, formats
- ``digests``     which digest to check against (Repr-Digest, ETag, x-goog-hash, …), hashing
- ``signed_url``  the current signed URL, renewed before expiry or when refused
- ``journal``     which bytes of a part file are good (resume across processes)
- ``part_file``   the part file: descriptor, journal, layout, locks, counts; its hasher
- ``blob_readers`` one blob range into the part file: direct (threads) or through httpx
- ``responses``   a blob answer's validators and error text
- ``body_bounds`` how far a body may go (promised sizes, the unsized cap, free space)
- ``attempts``    one request of one segment: headers, the answer checked, failures sorted
- ``fetcher``     one URL into one part file: segments scheduled over connections, retried
- ``checked``     the fetcher plus the digest check and one fresh retry
- ``install``     part paths, locks, free space, present copies, atomic installs
- ``archive``     the archive generation: fetch, verify, extract (``api/extract.py``)
- ``files``       the files generation: every file of a URL map, verified, installed
- ``files_checks`` a URL map and the fetched files checked before they are trusted
- ``files_layout``  the per-file working directory in DEST (ours or refused) and its install
"""

from __future__ import annotations

from logits_cli.api.transfer.archive import complete_even_if_cancelled, download_checkpoint
from logits_cli.api.transfer.checked import fetch_and_check
from logits_cli.api.transfer.digests import Crc32c, ExpectedDigest, choose_digest, hash_file
from logits_cli.api.transfer.fetcher import RangedFetcher, choose_segment_size
from logits_cli.api.transfer.journal import Journal
from logits_cli.api.transfer.signed_url import SignedUrl

__all__ = [
    "Crc32c",
    "ExpectedDigest",
    "Journal",
    "RangedFetcher",
    "SignedUrl",
    "choose_digest",
    "choose_segment_size",
    "complete_even_if_cancelled",
    "download_checkpoint",
    "fetch_and_check",
    "hash_file",
]
