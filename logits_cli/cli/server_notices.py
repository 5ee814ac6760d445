"""What ``logits server start`` says before it serves: where its store is (no password of a
URL shown), and a warning when it listens beyond this machine with no API key."""

from pathlib import Path


def store_line(store_dir: Path, database_url: str | None, blobs_url: str | None) -> str:
    """``Store: DIR (metadata: …; blobs: …)``: where this server reads and writes."""
    metadata = without_password(database_url) if database_url else str(store_dir / "meta.sqlite3")
    blobs = without_password(blobs_url) if blobs_url else str(store_dir / "blobs")
    return f"Store: {store_dir} (metadata: {metadata}; blobs: {blobs})"


def no_keys_warning(host: str) -> str:
    return (
        f"Warning: no API keys, and listening on {host}: every request will be refused "
        "until you create one with `logits server keys create USER`"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: assume it is reachable from elsewhere


def without_password(url: str) -> str:
    """``url`` with any password removed, from its user part and its query
    (``postgresql://u:secret@h/db?password=x`` -> ``postgresql://u@h/db``)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, place = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{place}"
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if "password" not in key.lower()
    ]
    return parts._replace(netloc=netloc, query=urlencode(query)).geturl()
